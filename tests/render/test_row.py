"""A release row from a fetched sample (render/row.py): the missing-chunk limit is applied here, to the window's
recorded fractions and to each view's own pixels, so that changing `max_missing_fraction` needs no refetch."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import trimesh

from config import load_config
from core.errors import SampleError
from core.fetched import MISSING_BITS, FetchedSample
from render.row import render_row

VOXEL = np.array([25.0, 25.0, 50.0])
CENTER = np.array([10_000.0, 10_000.0, 10_000.0])


def _sample(em_fraction: float, missing: np.ndarray | None = None) -> FetchedSample:
    cfg = load_config("demo")
    n = np.round(1.5 * cfg.em_window_nm / VOXEL).astype(int)
    labels = np.zeros(n, np.uint8)
    labels[: n[0] // 2, n[1] // 3 : 2 * n[1] // 3] = 1
    labels[n[0] // 2 :, n[1] // 3 : 2 * n[1] // 3] = 2
    a = trimesh.creation.box(extents=(800, 800, 800)).apply_translation(CENTER - [300, 0, 0])
    b = trimesh.creation.box(extents=(800, 800, 800)).apply_translation(CENTER + [300, 0, 0])
    mesh = [(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32)) for m in (a, b)]
    return FetchedSample(
        meshes=mesh,
        em=np.random.default_rng(1).integers(30, 220, n, dtype=np.uint8),
        labels=labels,
        em_voxel_nm=VOXEL,
        em_origin_nm=CENTER - n * VOXEL / 2,
        em_missing_fraction=em_fraction,
        seg_missing_fraction=0.0,
        crop_half_nm=5000.0,
        missing=missing,
    )


ROW = {
    "combined_sample_hash": "81c5a636674e76552ed428d6c3f1148c", "source_archive_sample_hash": "88cda73850c3",
    "source_archive": "unified_demo", "sample_type": "merge_edit", "same_neuron": True,
    "false_split_correction_label": 1.0, "false_merge_identification_label": None, "species": "demo",
    "coord_nm": CENTER.tolist(), "mask_b_root": 2, "metadata": json.dumps({"species": "demo"}),
}  # fmt: skip


def test_the_windows_fraction_is_held_to_the_limit_render_is_given():
    cfg = load_config("demo")
    with pytest.raises(SampleError) as exc:
        render_row(ROW, _sample(0.3), cfg.model_copy(update={"max_missing_fraction": 0.02}))
    assert exc.value.reason == "em_chunks_missing" and "EM window" in str(exc.value)
    row = render_row(ROW, _sample(0.3), cfg.model_copy(update={"max_missing_fraction": 0.5}))
    assert json.loads(row["metadata"])["em_missing_fraction"] == 0.3


def test_a_view_on_absent_chunks_fails_though_the_window_fraction_is_small():
    cfg = load_config("demo")
    n = np.round(1.5 * cfg.em_window_nm / VOXEL).astype(int)
    missing = np.zeros(n, np.uint8)
    missing[:, :, n[2] // 2 - 1 : n[2] // 2 + 2] = MISSING_BITS["seg"]  # a thin slab through the xy plane
    with pytest.raises(SampleError) as exc:
        render_row(ROW, _sample(0.0, missing), cfg)
    assert exc.value.reason == "seg_chunks_missing" and "EM view" in str(exc.value)
    render_row(ROW, _sample(0.0, missing), cfg.model_copy(update={"max_missing_fraction": 1.0}))


class _Recording:
    """A config that notes every key read from it."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        self._cfg, self.read = cfg, set()

    def __getattr__(self, key: str):  # noqa: ANN204
        self.read.add(key)
        return getattr(self._cfg, key)


def test_render_reads_only_the_keys_its_stage_declares():
    """A row depends on no config key but RenderStage.reads (the keys in its samples' keys and fingerprints)."""
    from pipeline.stages.render import RenderStage

    cfg = _Recording(load_config("demo"))
    render_row(ROW, _sample(0.0), cfg)
    assert cfg.read and cfg.read <= set(RenderStage.reads), cfg.read - set(RenderStage.reads)


@pytest.mark.parametrize("sample_type", ["merge_edit", "junction_control"])
def test_a_rows_geometry_is_an_npz_whose_arr_0_is_float16_of_shape_3_7_224_224(sample_type):
    """The card's geometry column, read as its loading example reads it: np.load(...)["arr_0"]."""
    single = sample_type == "junction_control"
    sample = _sample(0.0)
    if single:
        sample.meshes = sample.meshes[:1]
    row = render_row({**ROW, "sample_type": sample_type, "mask_b_root": "" if single else 2}, sample,
                     load_config("demo"))  # fmt: skip
    with np.load(io.BytesIO(row["geometry"])) as npz:
        assert npz.files == ["arr_0"]
        geom = npz["arr_0"]
    assert geom.dtype == np.float16 and geom.shape == (3, 7, 224, 224)
    assert geom[:, 5].any() and (geom[:, 6].any() != single)  # mask B: set on the dual row only


def _plate(center: np.ndarray, extent: float, dx: float) -> trimesh.Trimesh:
    """A square plate across the x axis at `dx` from the centre, half as wide as the view."""
    plate = trimesh.creation.box(extents=(10.0, extent, extent))
    return plate.apply_translation(center + [dx, 0.0, 0.0])


@pytest.mark.parametrize(("factor", "seen"), [(1.1, True), (1.3, False)])
def test_meshes_are_cropped_at_12_times_the_drawn_extent_and_the_drawn_view_is_recorded(factor, seen):
    """The front view looks along +x: a plate at x = centre - 1.1 x extent is in the crop (1.2 x extent) and hides
    the middle of the view; one at 1.3 x extent is cropped away. The extent and centre drawn are in the metadata."""
    from render.geometry import draw_view_params

    cfg = load_config("demo")
    row = {**ROW, "sample_type": "junction_control", "mask_b_root": ""}
    center, extent = draw_view_params(row["combined_sample_hash"], row["coord_nm"], cfg.extent_nm,
                                      cfg.center_jitter_nm, cfg.seed)  # fmt: skip
    cube = trimesh.creation.box(extents=(200.0, 200.0, 200.0)).apply_translation(center)
    mesh = trimesh.util.concatenate([cube, _plate(center, extent, -factor * extent)])
    sample = _sample(0.0)
    sample.meshes = [(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32))]
    out = render_row(row, sample, cfg)
    geom = np.load(io.BytesIO(out["geometry"]))["arr_0"].astype(np.float32)
    front = geom[0, 0] > 0
    side = np.ceil(224 * 200.0 / (2 * extent))  # the cube's width in pixels
    assert (front.sum() > 224 * 224 / 5) == seen, front.sum()
    assert front.sum() >= side * side * 0.8  # the cube itself is always there
    meta = json.loads(out["metadata"])
    assert meta["view_extent_nm"] == round(float(extent), 3)
    assert meta["render_center_nm"] == [round(float(v), 3) for v in center]
