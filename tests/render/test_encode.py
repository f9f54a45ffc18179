import io
import struct

import deflate
import numpy as np
import pytest
from PIL import Image

from render.encode import encode_png
from shard.rules import _png_pixels


def _idat_rows(png: bytes, height: int) -> np.ndarray:
    pos, idat = 8, b""
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            idat += png[pos + 8 : pos + 8 + n]
        pos += 12 + n
    return np.frombuffer(deflate.zlib_decompress(idat, 1 << 22), np.uint8).reshape(height, -1)


@pytest.mark.parametrize("shape,mode", [((224, 224, 3), "RGB"), ((224, 224), "L"), ((5, 7, 3), "RGB")])
def test_png_round_trips_through_pillow_and_wuffs(shape, mode):
    arr = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    arr[2:4] = 255  # flat rows and wrap-around differences
    png = encode_png(arr)
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == mode and np.array_equal(np.asarray(im), arr)
    if shape[:2] == (224, 224):
        assert np.array_equal(_png_pixels(png, mode)[2], arr)  # deep verify's decoder reads the same pixels
    assert encode_png(arr.copy()) == png  # the same array, the same bytes
    assert (_idat_rows(png, shape[0])[:, 0] == 2).all()  # every row Up-filtered


def test_png_rejects_other_arrays():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
