"""The render stage: fetched arrays -> one parquet part of encoded release rows per partition.

Rows are in RENDER_PART_SCHEMA (the release columns minus `split`), sorted by
combined_sample_hash, so the shard stage can merge the parts of every species as sorted streams.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.context import BuildContext
from pipeline.core.atomic import write_parquet
from pipeline.core.errors import SampleError
from pipeline.core.layout import MARKER
from pipeline.core.release_schema import EM_COLUMNS, RENDER_PART_SCHEMA, SPLIT_MASK_COLUMNS
from pipeline.core.samples import DUAL_TYPES, task_routing
from pipeline.em_record import check_views_missing, em_metadata
from pipeline.fetch import STAGE as FETCH_STAGE
from pipeline.fetch import fetched_meshes, load_fetched
from pipeline.markers import outputs_digest, read_marker
from pipeline.reuse import PriorRun
from pipeline.runner import Outcome, Partition, is_done
from pipeline.stages.common import (
    bank_complete,
    bank_partition,
    bank_partitions,
    partition_rows,
    run_samples,
    sample_key,
    upstream_not_done,
)
from pipeline.stages.fetch import FetchStage, fetched_files
from render.em_views import render_em_views
from render.encode import encode_geometry, encode_png
from render.geometry import crop_mesh, draw_view_params, render_geometry
from render.split_masks import render_split_masks

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
    reads = ("extent_nm", "center_jitter_nm", "seed", "em_window_nm", "max_missing_fraction")
    consumes = FETCH_STAGE

    def plan(self, ctx: BuildContext) -> list[Partition]:
        fetch = {p.index: p for p in FetchStage().plan(ctx)}
        return bank_partitions(ctx, self, upstream=lambda index: self._upstream(ctx, fetch[index]))

    def _upstream(self, ctx: BuildContext, fetch_part: Partition) -> str:
        done = is_done(ctx, fetch_part)
        return outputs_digest(read_marker(fetch_part.marker_path(ctx))) if done else "fetch-not-done"

    def partition_of(self, ctx: BuildContext, fetch_part: Partition) -> Partition:
        """The render partition over the same rows as `fetch_part`, fingerprinted by that fetch's outputs now."""
        rows = partition_rows(ctx, fetch_part)
        hashes, digests = [r["combined_sample_hash"] for r in rows], [r["row_digest"] for r in rows]
        return bank_partition(ctx, self, fetch_part.index, fetch_part.level, hashes, digests,
                              self._upstream(ctx, fetch_part))  # fmt: skip

    def missing_upstream(self, ctx: BuildContext, parts: list[Partition]) -> str | None:
        return bank_complete(ctx) or upstream_not_done(ctx, FETCH_STAGE, FetchStage().plan(ctx))

    def run(
        self,
        ctx: BuildContext,
        part: Partition,
        prior: PriorRun | None,
        fetched: Callable[[str], tuple[Path, str] | None] | None = None,
    ) -> Outcome:
        """Render the partition's fetched samples, keeping the rows whose key is unchanged. `fetched(hash)` gives
        a sample's fetched file and its sha256 (None: its fetch failed, and the ledger says why); by default
        from the fetch partition's marker, or, fused with a running fetch, as each sample is fetched."""
        if fetched is None:
            fetched = fetched_files(ctx, read_marker(ctx.part_file(FETCH_STAGE, part.index, MARKER))).get
        found: dict[str, tuple[Path, str]] = {}
        old: dict[str, object] = {}  # the earlier rows, read on the first sample that can keep its row

        def key_of_row(row: dict) -> str | None:
            got = fetched(row["combined_sample_hash"])
            if got is None:
                return None
            found[row["combined_sample_hash"]] = got
            return sample_key(ctx, self, row["row_digest"], got[1])

        kept: list[int] = []
        built: list[dict] = []

        def reuse(row: dict, key: str) -> bool:
            h = row["combined_sample_hash"]
            if prior is None or not prior.reusable(h, key):
                return False
            if not old:
                table = prior.rows(ctx, {m for m in part.members if m in prior.keys})
                old["table"] = table
                hashes = table.column("combined_sample_hash").to_pylist() if table is not None else []
                old["index"] = {x: i for i, x in enumerate(hashes)}
            i = old["index"].get(h)
            if i is None:
                return False
            kept.append(i)
            return True

        def build(row: dict, key: str) -> None:
            path, sha256 = found[row["combined_sample_hash"]]
            built.append(render_row(row, load_fetched(path, sha256), ctx.cfg))

        outcome = run_samples(ctx, part, partition_rows(ctx, part), key_of_row, reuse, build, prior)
        table = pa.Table.from_pylist(built, schema=RENDER_PART_SCHEMA)
        if kept:
            table = pa.concat_tables([old["table"].take(pa.array(kept, pa.int64())).cast(RENDER_PART_SCHEMA), table])
        table = table.sort_by("combined_sample_hash").combine_chunks()
        out = part.output_file(ctx)
        write_parquet(out, table)
        outcome.outputs = [out]
        return outcome
