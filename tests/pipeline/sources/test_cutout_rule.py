"""The shared cutout rule (pipeline.sources.base): missing chunks found chunk by chunk, padding never missing,
and the fraction of the EM window that fetch limits."""

import numpy as np
import pytest
from cloudvolume import CloudVolume
from cloudvolume.exceptions import EmptyVolumeException

from pipeline.sources.base import chunk_boxes, read_padded, window_fraction

CHUNK = np.array([4, 4, 2])
ORIGIN = np.array([1, 1, 0])  # the layer's voxel offset: chunks start there


def _reader(volume, absent):
    """read(lo, hi) over `volume` (global voxel coords) that raises like CloudVolume(fill_missing=False)
    when [lo, hi) touches a chunk listed in `absent` (chunk grid indices)."""
    calls = []

    def read(lo, hi):
        calls.append((tuple(lo), tuple(hi)))
        for a, _b in chunk_boxes(lo, hi, CHUNK, ORIGIN):
            if tuple((a - ORIGIN) // CHUNK) in absent:
                raise EmptyVolumeException(f"{a}")
        return volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]

    return read, calls


def test_chunk_boxes_follow_the_layer_grid():
    boxes = chunk_boxes(np.array([3, 1, 0]), np.array([10, 5, 2]), CHUNK, ORIGIN)
    assert [(a.tolist(), b.tolist()) for a, b in boxes] == [
        ([3, 1, 0], [5, 5, 2]), ([5, 1, 0], [9, 5, 2]), ([9, 1, 0], [10, 5, 2]),
    ]  # fmt: skip


def test_present_chunks_read_in_one_call_with_no_mask():
    vol = np.arange(13 * 13 * 6, dtype=np.uint16).reshape(13, 13, 6) + 1
    read, calls = _reader(vol, absent=set())
    data, missing = read_padded(read, np.array([2, 2, 0]), np.array([11, 11, 6]), ORIGIN, (13, 13, 6), np.uint16,
                                CHUNK, ORIGIN)  # fmt: skip
    assert missing is None and len(calls) == 1 and np.array_equal(data, vol[2:11, 2:11, 0:6])


def test_an_absent_chunk_is_zero_and_marked_and_padding_is_not():
    vol = np.arange(13 * 13 * 6, dtype=np.uint16).reshape(13, 13, 6) + 1
    read, _ = _reader(vol, absent={(1, 0, 1)})  # voxels [5, 9) x [1, 5) x [2, 4)
    start, stop = np.array([-2, 0, 0]), np.array([8, 6, 6])  # leaves the bounds (lo = (1, 1, 0)) on x and y
    data, missing = read_padded(read, start, stop, ORIGIN, (13, 13, 6), np.uint16, CHUNK, ORIGIN)
    want = np.zeros(tuple(stop - start), bool)
    want[5 - start[0] : 8 - start[0], 1:5, 2:4] = True
    assert np.array_equal(missing, want)
    assert not data[want].any()
    inside = np.zeros_like(want)
    inside[1 - start[0] :, 1:, :] = True  # the part inside the bounds
    assert np.array_equal(data[inside & ~want], vol[1:8, 1:6, 0:6][~want[3:, 1:, :]])
    assert not data[~inside].any() and not missing[~inside].any()  # padding: zero, never missing


def test_window_fraction_counts_the_central_window_only():
    mask = np.zeros((30, 30, 12), bool)  # 1.5 x a 600 nm window of 30 nm (xy) and 75 nm (z) voxels
    voxel = (30.0, 30.0, 75.0)
    assert window_fraction(None, voxel, 600.0) == 0.0
    mask[:5] = True  # outside the window (x < 150 nm from the edge)
    assert window_fraction(mask, voxel, 600.0) == 0.0
    mask[:] = False
    mask[5:7] = True  # 2 of the window's 20 x-slices
    assert window_fraction(mask, voxel, 600.0) == pytest.approx(2 / 20)


def test_demo_layer_on_disk_missing_chunk_file(tmp_path):
    """The real thing on a file:// layer: a deleted chunk file is found by CloudVolume(fill_missing=False)."""
    info = CloudVolume.create_new_info(
        1, "image", "uint8", "raw", [8, 8, 8], [0, 0, 0], [64, 64, 32], chunk_size=[32, 32, 16]
    )
    cv = CloudVolume(f"file://{tmp_path}/em", info=info, progress=False)
    cv.commit_info()
    cv[:, :, :] = np.full((64, 64, 32), 7, np.uint8)
    (next((tmp_path / "em" / "8_8_8").glob("32-64_0-32_16-32*"))).unlink()
    strict = CloudVolume(f"file://{tmp_path}/em", fill_missing=False, progress=False)

    def read(lo, hi):
        return strict[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]

    data, missing = read_padded(read, np.array([16, 16, 8]), np.array([80, 48, 24]), strict.bounds.minpt,
                                strict.bounds.maxpt, strict.dtype, strict.chunk_size, strict.voxel_offset)  # fmt: skip
    want = np.zeros((64, 32, 16), bool)
    want[16:48, :16, 8:] = True  # chunk [32, 64) x [0, 32) x [16, 32) within the cutout
    assert np.array_equal(missing, want)
    assert (data[:48][~want[:48]] == 7).all() and not data[want].any() and not data[48:].any()
