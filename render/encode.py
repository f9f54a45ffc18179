"""Deterministic encodings: the geometry npz (key arr_0) and PNGs.

np.savez_compressed writes zip entries through zipfile with the wall-clock time, so its bytes change from
second to second. encode_geometry writes the same zip layout (one deflated member `arr_0.npy`, NPY format)
with a fixed timestamp, so the same array always gives the same bytes and np.load reads it unchanged.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile

import deflate
import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

from core.npy import PARSE_LOCK, load_npz

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


@functools.lru_cache(maxsize=64)
def _npy_header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of an NPY payload starting with `head` (numpy's own reader,
    cached: every row of a release has the same header, and numpy parses it with ast: under `PARSE_LOCK`)."""
    npy = io.BytesIO(head)
    version = npy_format.read_magic(npy)
    with PARSE_LOCK:
        shape, fortran, dtype = (
            npy_format.read_array_header_1_0(npy) if version == (1, 0) else npy_format.read_array_header_2_0(npy)
        )
    return shape, fortran, dtype, npy.tell()


def decode_geometry(data: bytes) -> np.ndarray:
    """The npz's `arr_0`, as np.load gives it. The one deflated member that encode_geometry writes is inflated
    with libdeflate (the `deflate` package, about twice zlib's speed; deep verify decodes every row) and its
    CRC-32 checked as zipfile would; any other layout goes through np.load."""
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf) as zf:
        infos = zf.infolist()
        info = infos[0] if len(infos) == 1 else None
        if (
            info is None
            or info.filename != "arr_0.npy"
            or info.compress_type != zipfile.ZIP_DEFLATED
            or info.flag_bits & 1
        ):
            return load_npz(buf, ["arr_0"])["arr_0"]
    head = struct.unpack(
        zipfile.structFileHeader, data[info.header_offset : info.header_offset + zipfile.sizeFileHeader]
    )
    if head[0] != zipfile.stringFileHeader:
        raise zipfile.BadZipFile("Bad magic number for file header")
    start = info.header_offset + zipfile.sizeFileHeader + head[10] + head[11]  # + name and extra field lengths
    raw = deflate.deflate_decompress(memoryview(data)[start : start + info.compress_size], info.file_size)
    if deflate.crc32(raw) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    head_len = (
        10 + int.from_bytes(raw[8:10], "little") if raw[6:7] == b"\x01" else 12 + int.from_bytes(raw[8:12], "little")
    )
    shape, fortran, dtype, offset = _npy_header(bytes(raw[:head_len]))
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)  # writable: libdeflate gives a bytearray


# PNG: every row Up-filtered (type 2), the stream deflated by libdeflate. On the demo's EM views this is 25% smaller
# than Pillow's level-1 PNG (whose adaptive choice is Paeth on nearly every row), decodes ~1.5x faster (Paeth is
# the slow filter to undo; deep verify decodes every image) and is one numpy subtraction to filter.
PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_UP = 2
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type: greyscale, truecolour (8 bits each)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", deflate.crc32(kind + data))


def encode_png(arr: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """An (H, W, 3) RGB or (H, W) greyscale uint8 array as PNG bytes; the same array always gives the same bytes."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8, got {arr.dtype}")
    if not ((arr.ndim == 3 and arr.shape[2] == 3) or arr.ndim == 2):
        raise ValueError(f"encode_png takes (H, W, 3) or (H, W), got {arr.shape}")
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else 3
    rows = arr.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = _PNG_UP
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG's Up filter
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", deflate.zlib_compress(filtered.tobytes(), compress_level))
        + _png_chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(im.mode)).copy()
