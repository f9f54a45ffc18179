"""What a sample fetches (pipeline/stages/fetch_sample.py), from a fake source that records what it is asked: the EM
and segmentation cube 1.5 x the EM window around the point, the segmentation at the row's time with segments A, B
labelled 1, 2, each mesh bounded to the sample's box and cropped there."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from config import load_config
from core.errors import SampleError
from pipeline.sources.base import Cutout
from pipeline.stages.fetch_sample import EM_FACTOR, crop_box_half_nm, fetch_sample

POINT = np.array([20_000.0, 20_000.0, 20_000.0])
A, B, OTHER = 11, 22, 33


class _Recording:
    """Meshes: a 400 nm cube at the point; EM and segmentation: a 4 x 4 x 4 cube, A | B | OTHER along x."""

    def __init__(self) -> None:
        self.em_sizes: list[float] = []
        self.seg_asks: list[tuple[float, float]] = []
        self.mesh_boxes: dict[int, object] = {}

    def mesh(self, root_id, box_nm=None):  # noqa: ANN001, ANN201
        self.mesh_boxes[int(root_id)] = box_nm
        if int(root_id) == 99:
            raise SampleError("missing_mesh", "no fragment")
        return trimesh.creation.box(extents=(400.0, 400.0, 400.0)).apply_translation(POINT)

    def em_cutout(self, center_nm, size_nm):  # noqa: ANN001, ANN201
        self.em_sizes.append(float(size_nm))
        return Cutout(np.full((4, 4, 4), 100, np.uint8), (size_nm / 4,) * 3, tuple(center_nm - size_nm / 2))

    def segmentation_cutout(self, center_nm, size_nm, timestamp):  # noqa: ANN001, ANN201
        self.seg_asks.append((float(size_nm), float(timestamp)))
        data = np.full((4, 4, 4), OTHER, np.uint64)
        data[:2], data[2] = A, B
        return Cutout(data, (size_nm / 4,) * 3, tuple(center_nm - size_nm / 2))


def _row(sample_type: str, roots: list[int], a: int, b: int | None, after: list[int] = ()) -> dict:  # noqa: B006
    return {"combined_sample_hash": "0" * 32, "sample_type": sample_type, "coord_nm": POINT.tolist(),
            "cutout_timestamp": 1_234.0, "geometry_roots": [str(r) for r in roots], "mask_a_root": str(a),
            "mask_b_root": "" if b is None else str(b), "after_roots": [str(r) for r in after]}  # fmt: skip


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo")


def test_em_and_segmentation_are_one_cube_15_times_the_window_and_the_segmentation_is_at_the_rows_time(cfg):
    src = _Recording()
    got = fetch_sample(src, cfg, _row("merge_edit", [A, B], A, B))
    size = EM_FACTOR * cfg.em_window_nm
    assert EM_FACTOR == 1.5 and src.em_sizes == [size] and src.seg_asks == [(size, 1_234.0)]
    assert got.labels[:2].tolist() == np.ones((2, 4, 4)).tolist() and (got.labels[2] == 2).all()
    assert (got.labels[3] == 0).all()  # a third root is neither segment


def test_a_single_segment_rows_labels_have_no_segment_b(cfg):
    got = fetch_sample(_Recording(), cfg, _row("junction_control", [A], A, None))
    assert set(np.unique(got.labels).tolist()) == {0, 1} and len(got.meshes) == 1


def test_each_mesh_is_asked_for_the_samples_box_only_and_cropped_to_it(cfg):
    src = _Recording()
    got = fetch_sample(src, cfg, _row("split_edit", [A], A, B, after=[A, B]))
    half = crop_box_half_nm(cfg)
    for root in (A, B):
        lo, hi = src.mesh_boxes[root]
        assert lo.tolist() == (POINT - half).tolist() and hi.tolist() == (POINT + half).tolist()
    assert len(got.meshes) == 1 and len(got.after) == 2 and got.crop_half_nm == half


def test_a_split_without_an_after_mesh_keeps_its_row_without_an_after_state(cfg):
    got = fetch_sample(_Recording(), cfg, _row("split_edit", [A], A, B, after=[A, 99]))
    assert got.after == []
