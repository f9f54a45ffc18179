"""Every NPY header the product parses is parsed under the one lock (core/npy.py): CPython 3.11's AST builder
fails spuriously when two threads parse at once, and numpy parses each header with ast.literal_eval."""

from __future__ import annotations

import ast
import io
import threading

import numpy as np
import pytest

from core.fetched import FetchedSample, crop_half_of
from core.npy import PARSE_LOCK, load_npz
from render import encode


@pytest.fixture
def parses(monkeypatch):
    """Whether PARSE_LOCK was held at each ast.literal_eval call (numpy's header parser)."""
    seen: list[bool] = []
    real = ast.literal_eval

    def watched(node_or_string):  # noqa: ANN001, ANN202 - ast.literal_eval's own signature
        seen.append(PARSE_LOCK.locked())
        return real(node_or_string)

    monkeypatch.setattr(ast, "literal_eval", watched)
    return seen


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_reading_an_npz_parses_its_headers_under_the_lock(tmp_path, parses):
    path = tmp_path / "a.npz"
    path.write_bytes(_npz(crop_half_nm=np.float64(750.0), em=np.zeros((2, 3), np.uint8)))
    assert set(load_npz(io.BytesIO(path.read_bytes()))) == {"crop_half_nm", "em"}
    assert crop_half_of(path) == 750.0
    assert load_npz(str(path), ["em", "absent"]).keys() == {"em"}
    assert parses and all(parses), parses


def test_a_fetched_samples_file_is_read_under_the_lock(tmp_path, parses, monkeypatch):
    monkeypatch.setattr(FetchedSample, "from_arrays", classmethod(lambda cls, arrays: sorted(arrays)))
    path = tmp_path / "s.npz"
    path.write_bytes(_npz(a=np.arange(3), b=np.ones(2)))
    assert FetchedSample.load(path) == ["a", "b"]
    assert parses and all(parses), parses


@pytest.mark.parametrize("layout", ["ours", "numpy's"])
def test_a_geometry_npz_is_decoded_with_its_header_parsed_under_the_lock(parses, layout):
    arr = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    data = encode.encode_geometry(arr) if layout == "ours" else _npz(arr_0=arr)
    encode._npy_header.cache_clear()
    np.testing.assert_array_equal(encode.decode_geometry(data), arr)
    assert parses and all(parses), parses


def test_threads_reading_at_once_wait_for_each_other(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(_npz(x=np.arange(5)))
    with PARSE_LOCK:
        done = threading.Event()
        reader = threading.Thread(target=lambda: (load_npz(str(path)), done.set()))
        reader.start()
        assert not done.wait(0.2)  # held back by the lock
    assert done.wait(30)
    reader.join()
