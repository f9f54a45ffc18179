"""Each root's mesh fetched once per partition, bounded (pipeline/stages/fetch_meshes.py): the box asked for is
the union of the fetch boxes of the samples that need the root, never the whole mesh. A fake source, no world."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from config import load_config
from core.errors import SampleError
from pipeline.stages.fetch_meshes import PartitionMeshes, sample_box


class _Boxes:
    """A source whose meshes are one triangle; it records the box of every mesh call (None: the whole mesh)."""

    def __init__(self, missing: frozenset[int] = frozenset()) -> None:
        self.calls: list[tuple[int, object]] = []
        self.missing = missing

    def mesh(self, root_id, box_nm=None):  # noqa: ANN001, ANN201
        self.calls.append((int(root_id), box_nm))
        if int(root_id) in self.missing:
            raise SampleError("missing_mesh", f"root {root_id}: no fragment")
        return trimesh.Trimesh(np.eye(3), np.array([[0, 1, 2]]), process=False)


def _row(sample_type: str, coord: list[float], roots: list[int], after: list[int] = ()) -> dict:  # noqa: B006
    return {"sample_type": sample_type, "coord_nm": coord, "geometry_roots": [str(r) for r in roots],
            "after_roots": [str(r) for r in after]}  # fmt: skip


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo")


def test_a_root_is_fetched_once_bounded_to_the_union_of_its_samples_boxes(cfg):
    rows = [
        _row("merge_edit", [10_000.0, 10_000.0, 10_000.0], [1, 2]),
        _row("junction_control", [30_000.0, 12_000.0, 9_000.0], [1]),
        _row("split_edit", [50_000.0, 50_000.0, 50_000.0], [3], after=[4, 5]),
    ]
    source = _Boxes()
    meshes = PartitionMeshes(source, cfg, rows)
    for row in rows:
        for root in [*row["geometry_roots"], *row["after_roots"]]:
            meshes.mesh(int(root))
    assert sorted(r for r, _ in source.calls) == [1, 2, 3, 4, 5]  # each root once, the split's after roots too
    boxes = dict(source.calls)
    assert all(box is not None for box in boxes.values())  # never the whole mesh
    (lo0, hi0), (lo1, hi1) = sample_box(cfg, rows[0]), sample_box(cfg, rows[1])
    assert np.array_equal(boxes[1][0], np.minimum(lo0, lo1)) and np.array_equal(boxes[1][1], np.maximum(hi0, hi1))
    assert np.array_equal(boxes[2][0], lo0) and np.array_equal(boxes[2][1], hi0)  # root 2: the merge's box alone
    for root in (3, 4, 5):
        assert [b.tolist() for b in boxes[root]] == [b.tolist() for b in sample_box(cfg, rows[2])]


def test_a_samples_fetch_box_is_its_point_plus_the_widest_crop_any_render_can_need(cfg):
    from pipeline.stages.fetch_sample import crop_box_half_nm

    lo, hi = sample_box(cfg, _row("merge_edit", [1000.0, 2000.0, 3000.0], [1, 2]))
    half = crop_box_half_nm(cfg)
    assert half >= 1.2 * cfg.extent_nm[1]  # the crop of the largest extent drawn (contract §2), plus jitter
    assert lo.tolist() == [1000.0 - half, 2000.0 - half, 3000.0 - half]
    assert hi.tolist() == [1000.0 + half, 2000.0 + half, 3000.0 + half]


def test_a_missing_mesh_is_remembered_and_not_asked_again(cfg):
    rows = [_row("junction_control", [0.0, 0.0, 0.0], [9]), _row("junction_control", [5000.0, 0.0, 0.0], [9])]
    source = _Boxes(missing=frozenset({9}))
    meshes = PartitionMeshes(source, cfg, rows)
    for _ in rows:
        with pytest.raises(SampleError, match="no fragment"):
            meshes.mesh(9)
    assert len(source.calls) == 1
