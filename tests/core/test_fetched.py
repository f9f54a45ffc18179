"""The fetched-sample type (core/fetched.py): the npz's keys, save and load, and the missing-chunk rule."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import SampleError, UserError
from core.fetched import FetchedSample, check_missing, crop_half_of


def _sample(missing=True) -> FetchedSample:
    rng = np.random.default_rng(0)
    tri = (rng.random((3, 3)).astype(np.float32), np.array([[0, 1, 2]], dtype=np.int32))
    return FetchedSample(
        meshes=[tri, tri],
        after=[tri],
        em=rng.integers(0, 255, (4, 5, 6), dtype=np.uint8),
        labels=np.zeros((4, 5, 6), dtype=np.uint8),
        em_voxel_nm=np.array([8.0, 8.0, 40.0]),
        em_origin_nm=np.array([1.0, 2.0, 3.0]),
        em_missing_fraction=0.01,
        seg_missing_fraction=0.0,
        crop_half_nm=4321.5,
        missing=np.ones((4, 5, 6), dtype=np.uint8) if missing else None,
    )


def test_the_files_keys(tmp_path):
    keys = list(_sample().to_arrays())
    assert keys == ["mesh0_vertices", "mesh0_faces", "mesh1_vertices", "mesh1_faces", "after0_vertices",
                    "after0_faces", "em", "labels", "em_voxel_nm", "em_origin_nm", "em_missing_fraction",
                    "seg_missing_fraction", "missing", "crop_half_nm"]  # fmt: skip
    assert "missing" not in _sample(missing=False).to_arrays()


@pytest.mark.parametrize("missing", [True, False])
def test_save_and_load_round_trip(tmp_path, missing):
    sample = _sample(missing)
    path = tmp_path / "ab" / "abc-key.npz"
    sha = sample.save(path)
    back = FetchedSample.load(path, sha)
    for key, value in sample.to_arrays().items():
        assert np.array_equal(back.to_arrays()[key], value) and back.to_arrays()[key].dtype == value.dtype, key
    assert back.missing_fractions == {"em": 0.01, "seg": 0.0}
    assert crop_half_of(path) == 4321.5 and crop_half_of(tmp_path / "absent.npz") == -1.0
    assert sample.save(tmp_path / "again.npz") == sha  # the same sample, the same bytes


def test_a_file_altered_on_disk_is_removed_and_stops_the_partition(tmp_path):
    path = tmp_path / "x.npz"
    sha = _sample().save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="altered on disk"):
        FetchedSample.load(path, sha)
    assert not path.exists()


def test_the_missing_chunk_rule():
    check_missing({"em": 0.02, "seg": 0.02}, 0.02, "the window")  # at the limit: kept
    with pytest.raises(SampleError) as em:
        check_missing({"em": 0.021, "seg": 0.5}, 0.02, "the 1500 nm EM window")
    assert em.value.reason == "em_chunks_missing"  # EM first
    assert "2.1% of the 1500 nm EM window comes from absent EM chunks (max_missing_fraction 0.02)" in str(em.value)
    with pytest.raises(SampleError) as seg:
        check_missing({"seg": 0.03}, 0.02, "an EM view's pixels")
    assert seg.value.reason == "seg_chunks_missing" and "segmentation chunks" in str(seg.value)
    check_missing({}, 0.0, "nothing absent")


def test_the_bytes_do_not_depend_on_when_the_file_was_written(tmp_path, monkeypatch):
    """A sample fetched again from the same data is the same file (a file dropped under keep_fetched: false comes
    back under its recorded sha256): no zip entry carries the time of writing (np.savez writes its entries through
    `ZipFile.open(name, "w")`, whose ZipInfo has the fixed 1980 time)."""
    import time

    sha = _sample().save(tmp_path / "a.npz")
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert _sample().save(tmp_path / "b.npz") == sha
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
