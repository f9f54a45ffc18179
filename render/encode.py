"""Deterministic encodings: the geometry npz (key arr_0) and PNGs.

np.savez_compressed writes zip entries through zipfile with the wall-clock time, so its bytes change from
second to second. encode_geometry writes the same zip layout (one deflated member `arr_0.npy`, NPY format)
with a fixed timestamp, so the same array always gives the same bytes and np.load reads it unchanged.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# Deflate level of the geometry npz (np.savez_compressed uses zlib's default, 6). Measured on a dual render with
# 44% foreground (benchmarks/bench_render_core.py): level 6 ~25 ms / 312 kB, 3 ~15 ms / 340 kB, 1 ~17 ms / 356 kB.
# np.load reads any level.
NPZ_COMPRESS_LEVEL = 3


def encode_geometry(arr: np.ndarray, compress_level: int = NPZ_COMPRESS_LEVEL) -> bytes:
    npy = io.BytesIO()
    npy_format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        info = zipfile.ZipInfo("arr_0.npy", date_time=_FIXED_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        info.create_system = 3
        zf.writestr(info, npy.getbuffer(), compresslevel=compress_level)
    return out.getvalue()


def decode_geometry(data: bytes) -> np.ndarray:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return z["arr_0"]


def encode_png(arr: np.ndarray, compress_level: int = 1) -> bytes:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        mode = "RGB"
    elif arr.ndim == 2:
        mode = "L"
    else:
        raise ValueError(f"encode_png takes (H, W, 3) or (H, W), got {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), mode=mode).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(im.mode)).copy()
