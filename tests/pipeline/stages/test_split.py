"""The split stage (pipeline/stages/split.py) without a build: cubes counted from the segmentation's canonical bbox
(what the source says of the volume), never from the bank's own points."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from config import load_config
from pipeline.context import BuildContext
from pipeline.stage import Partition
from pipeline.stages import split as split_stage


class _Volume:
    def canonical_bbox_nm(self):  # noqa: ANN201
        return (0.0, 0.0, 0.0), (400_000.0, 400_000.0, 400_000.0)


def test_cubes_are_counted_from_the_segmentations_bbox_not_from_the_banks_points(tmp_path, monkeypatch):
    ctx = BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")
    ctx.bank_path.parent.mkdir(parents=True)
    points = {"a" * 32: [100_000.0, 10.0, 10.0], "b" * 32: [170_000.0, 10.0, 90_000.0]}
    pq.write_table(pa.table({"combined_sample_hash": list(points), "species": ["demo"] * 2,
                             "coord_nm": list(points.values())}), ctx.bank_path)  # fmt: skip
    monkeypatch.setattr(split_stage, "open_source", lambda c: _Volume())
    split_stage.SplitStage().run(ctx, Partition("split", 0, 2, "fp"), None)
    got = pq.read_table(ctx.split_path).to_pylist()
    # from the bbox's origin: x cubes 1 and 2 (80 um each); from the points' own minimum both would be in cube 0
    assert [(r["cube_x"], r["cube_y"], r["cube_z"]) for r in got] == [(1, 0, 0), (2, 0, 1)]
    manifest = json.loads(ctx.manifest_path.read_text())
    assert manifest["bbox_nm"] == {"min": [0.0, 0.0, 0.0], "max": [400_000.0, 400_000.0, 400_000.0]}
    assert manifest["cube_nm"] == 80_000.0 and manifest["salt"] == ctx.cfg.split_salt
