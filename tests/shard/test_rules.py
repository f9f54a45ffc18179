"""The row checks' decoders under the threads scheduler (deep verify runs one task per shard on any scheduler)."""

import subprocess
import sys

from tests.conftest import REPO

_STRESS = """
import io, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from PIL import Image
from shard.rules import _png_pixels

def png(value, mode):
    shape = (224, 224, 3) if mode == "RGB" else (224, 224)
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()

images = [(v, mode, png(v, mode)) for v in range(0, 250, 7) for mode in ("RGB", "L")]

def check(i):
    v, mode, data = images[i % len(images)]
    got, size, pixels = _png_pixels(data, mode)
    return got == mode and size == (224, 224) and pixels is not None and bool((pixels == v).all())

with ThreadPoolExecutor(4) as pool:
    ok = list(pool.map(check, range(3000)))
sys.exit(0 if all(ok) else 3)
"""


def test_png_checks_are_safe_on_many_threads():
    """One decoder shared by threads corrupted the heap (`double free or corruption`, exit -6) in deep verify
    with SCHEDULER=threads; run in a subprocess so that a crash is a failure, not the end of the suite."""
    proc = subprocess.run([sys.executable, "-c", _STRESS], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
