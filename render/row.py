"""A release row from a bank row and its fetched sample: geometry, EM views, split masks, metadata, encoding.

The render stage's logic (pipeline/stages/render.py is its adapter to the runner). Everything here is pure:
a fetched sample in, one row (the release's columns minus `split`) out; a sample that cannot be rendered raises
SampleError with its reason.

The missing-chunk rule (`max_missing_fraction`, core.fetched.check_missing) is applied here, first to
the EM window (the fractions the fetch recorded), then to each view's own pixels: the views are cut from the
window after recentring, and a thin slab of absent chunks can cross a view's plane while being a small part of
the window.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import numpy as np
import trimesh

from core.errors import SampleError
from core.fetched import FetchedSample, Mesh, check_missing
from core.release_schema import EM_COLUMNS, SPLIT_MASK_COLUMNS
from core.samples import DUAL_TYPES, task_routing
from render.em_views import render_em_views
from render.encode import encode_geometry, encode_png
from render.geometry import CROP_FACTOR, crop_mesh, draw_view_params, render_geometry
from render.split_masks import render_split_masks

IMAGE_TYPES = ("geometry", *EM_COLUMNS)


def _image(png: bytes | None) -> dict | None:
    return None if png is None else {"bytes": png, "path": None}


@contextlib.contextmanager
def _untimed(step: str) -> Iterator[None]:
    yield


def render_row(row: dict, sample: FetchedSample, cfg, timer=_untimed) -> dict:  # noqa: ANN001
    """One release row (without `split`) from a bank row and its fetched sample.

    `timer(step)` is a context manager wrapped around each step (the benchmark times them).
    """
    sample_hash = row["combined_sample_hash"]
    sample_type = row["sample_type"]
    check_missing(sample.missing_fractions, cfg.max_missing_fraction, f"the {cfg.em_window_nm:g} nm EM window")
    center, extent = draw_view_params(sample_hash, row["coord_nm"], cfg.extent_nm, cfg.center_jitter_nm, cfg.seed)
    with timer("geometry"):
        meshes = [crop_mesh(m, center, CROP_FACTOR * extent) for m in trimeshes(sample.meshes)]
        dual = sample_type in DUAL_TYPES
        if len(meshes) != (2 if dual else 1):
            raise SampleError("wrong_mesh_count", f"{sample_type} needs {2 if dual else 1} meshes, got {len(meshes)}")
        geometry = render_geometry(meshes, center, extent)
    with timer("em_views"):
        b_ids = {2} if row["mask_b_root"] else set()
        views, em_info = render_em_views(
            sample.em, sample.labels, tuple(sample.em_voxel_nm), {1}, b_ids, cfg.em_window_nm, missing=sample.missing
        )
        check_missing(em_info.get("missing_view_fraction") or {}, cfg.max_missing_fraction, "an EM view's pixels")
    masks = None
    after = trimeshes(sample.after)
    with timer("split_masks"):
        if sample_type == "split_edit" and len(after) == 2:
            after = [crop_mesh(m, center, CROP_FACTOR * extent) for m in after]
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
            **em_metadata(sample, em_info),
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


def trimeshes(meshes: list[Mesh]) -> list[trimesh.Trimesh]:
    return [trimesh.Trimesh(verts, faces, process=False) for verts, faces in meshes]


def em_metadata(sample: FetchedSample, info: dict) -> dict:
    """Metadata keys of the EM views (core.samples.RENDER_META_KEYS, those from EM): the views' centre in
    nm (absolute, after recentring), the best plane's normal, the output-resolution scores of the best and the
    cardinal views, and the fractions of the EM window from absent EM and segmentation chunks."""
    centre = sample.em_origin_nm + np.asarray(info["em_view_center_nm"], dtype=np.float64)
    return {
        "em_view_center_nm": [round(float(v), 3) for v in centre],
        "em_best_normal": [round(float(v), 6) for v in info["em_best_normal"]],
        "em_best_score": round(float(info["em_best_score"]), 6),
        "em_cardinal_scores": {k: round(float(v), 6) for k, v in info["em_cardinal_scores"].items()},
        "em_missing_fraction": round(sample.em_missing_fraction, 6),
        "seg_missing_fraction": round(sample.seg_missing_fraction, 6),
    }
