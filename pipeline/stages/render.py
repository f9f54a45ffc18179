"""The render stage: fetched arrays -> one parquet part of encoded release rows per partition.

Rows are in RENDER_PART_SCHEMA (the release columns minus `split`), sorted by
combined_sample_hash, so the shard stage can merge the parts of every species as sorted streams.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.atomic import write_parquet
from pipeline.context import BuildContext
from pipeline.em_record import check_views_missing, em_metadata
from pipeline.errors import SampleError
from pipeline.fetch import STAGE as FETCH_STAGE
from pipeline.fetch import fetched_meshes, load_fetched
from pipeline.ledger import Failure
from pipeline.runner import Partition
from pipeline.samples import DUAL_TYPES, task_routing
from pipeline.stages.common import bank_partitions, run_samples
from render.em_views import render_em_views
from render.encode import encode_geometry, encode_png
from render.geometry import crop_mesh, draw_view_params, render_geometry
from render.split_masks import render_split_masks
from shard.schema import EM_COLUMNS, RENDER_PART_SCHEMA, SPLIT_MASK_COLUMNS

STAGE = "render"
IMAGE_TYPES = ("geometry", *EM_COLUMNS)


def _image(png: bytes | None) -> dict | None:
    return None if png is None else {"bytes": png, "path": None}


@contextlib.contextmanager
def _untimed(step: str) -> Iterator[None]:
    yield


def render_row(row: dict, arrays: dict[str, np.ndarray], cfg, timer=_untimed) -> dict:  # noqa: ANN001
    """One release row (without `split`) from a bank row and its fetched arrays.

    `timer(step)` is a context manager wrapped around each step (the benchmark times them).
    """
    sample_hash = row["combined_sample_hash"]
    sample_type = row["sample_type"]
    center, extent = draw_view_params(sample_hash, row["coord_nm"], cfg.extent_nm, cfg.center_jitter_nm, cfg.seed)
    with timer("geometry"):
        meshes = [crop_mesh(m, center, 1.2 * extent) for m in fetched_meshes(arrays, "mesh")]
        dual = sample_type in DUAL_TYPES
        if len(meshes) != (2 if dual else 1):
            raise SampleError("wrong_mesh_count", f"{sample_type} needs {2 if dual else 1} meshes, got {len(meshes)}")
        geometry = render_geometry(meshes, center, extent)
    with timer("em_views"):
        b_ids = {2} if row["mask_b_root"] else set()
        views, em_info = render_em_views(
            arrays["em"], arrays["labels"], tuple(arrays["em_voxel_nm"]), {1}, b_ids, cfg.em_window_nm,
            missing=arrays.get("missing"),
        )  # fmt: skip
        check_views_missing(em_info, cfg.max_missing_fraction)
    masks = None
    after = fetched_meshes(arrays, "after")
    with timer("split_masks"):
        if sample_type == "split_edit" and len(after) == 2:
            after = [crop_mesh(m, center, 1.2 * extent) for m in after]
            if all(len(m.faces) for m in after):
                try:
                    masks = render_split_masks(after[0], after[1], center, extent, geometry[:, 0])
                except SampleError as exc:  # the after state misses a view: the row keeps its other columns
                    if exc.reason != "after_mask_empty":
                        raise
    has_after_mask = masks is not None
    image_types = list(IMAGE_TYPES) + (list(SPLIT_MASK_COLUMNS) if has_after_mask else [])
    meta = json.loads(row["metadata"])
    meta.update(
        {
            "image_types": image_types,
            "render_center_nm": [round(float(v), 3) for v in center],
            "view_extent_nm": round(float(extent), 3),
            **em_metadata(arrays, em_info),
        }
    )
    with timer("encode"):
        encoded = {"geometry": encode_geometry(geometry)}
        for column in EM_COLUMNS:
            encoded[column] = _image(encode_png(views[column]))
        for i, column in enumerate(SPLIT_MASK_COLUMNS):
            encoded[column] = _image(encode_png(masks[i]) if has_after_mask else None)
    return {
        "combined_sample_hash": sample_hash,
        "source_archive_sample_hash": row["source_archive_sample_hash"],
        "source_archive": row["source_archive"],
        "sample_type": sample_type,
        "same_neuron": row["same_neuron"],
        "task_routing": task_routing(sample_type, has_after_mask),
        "false_split_correction_label": row["false_split_correction_label"],
        "false_merge_identification_label": row["false_merge_identification_label"],
        "species": row["species"],
        "has_em": True,
        "has_after_mask": has_after_mask,
        "present_slots": sorted(image_types),
        "metadata": json.dumps(meta, sort_keys=True),
        **encoded,
    }


class RenderStage:
    name = STAGE

    def plan(self, ctx: BuildContext) -> list[Partition]:
        return bank_partitions(ctx, STAGE)

    def outputs(self, ctx: BuildContext, part: Partition) -> list[Path]:
        return [part.output_path(ctx)]

    def run(self, ctx: BuildContext, part: Partition) -> tuple[int, list[Failure]]:
        fetch_dir = Partition(FETCH_STAGE, part.index, part.n_samples, "").output_path(ctx, "")
        rows: list[dict] = []

        def build(row: dict) -> None:
            path = fetch_dir / f"{row['combined_sample_hash']}.npz"
            if not path.exists():  # its fetch failed, and the ledger says why
                return
            rows.append(render_row(row, load_fetched(path), ctx.cfg))

        n_done, failures = run_samples(ctx, part, build)
        rows.sort(key=lambda r: r["combined_sample_hash"])
        write_parquet(part.output_path(ctx), pa.Table.from_pylist(rows, schema=RENDER_PART_SCHEMA))
        return len(rows), failures
