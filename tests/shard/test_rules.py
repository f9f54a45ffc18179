"""The row checks' decoders under the threads scheduler (deep verify runs one task per shard on any scheduler)."""

import subprocess
import sys

import pytest

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


@pytest.mark.slow  # starts a Python subprocess
def test_png_checks_are_safe_on_many_threads():
    """One decoder shared by threads corrupted the heap (`double free or corruption`, exit -6) in deep verify
    with SCHEDULER=threads; run in a subprocess so that a crash is a failure, not the end of the suite."""
    proc = subprocess.run([sys.executable, "-c", _STRESS], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"


def _checked(row: dict) -> dict:
    """A row as `row_problems` reads it: the non-image columns and each slot's presence."""
    from shard.rules import SLOT_COLUMNS

    return {**{k: v for k, v in row.items() if k not in SLOT_COLUMNS},
            **{f"present:{c}": row[c] is not None for c in SLOT_COLUMNS}}  # fmt: skip


def test_row_forms_of_the_card_are_checked_without_decoding():
    """Identity forms (32 / 12 lowercase hex, the archive's recipe), labels, routing and flags of each type."""
    from shard.rules import row_problems
    from tests.shard import fakes

    for sample_type in ("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"):
        assert row_problems(_checked(fakes.make_row("fly", sample_type, "k"))) == [], sample_type
    good = _checked(fakes.make_row("fly", "merge_edit", "k"))
    bad = {
        "source_archive_sample_hash": good["source_archive_sample_hash"][:11],
        "combined_sample_hash": good["combined_sample_hash"].upper(),
        "source_archive": "unified_controls_fly",
        "false_split_correction_label": 0.0,
        "false_merge_identification_label": 1.0,
        "same_neuron": False,
        "task_routing": ["false_merge_identification"],
        "has_after_mask": True,
    }
    for key, value in bad.items():
        problems = row_problems({**good, key: value})
        assert any(p.startswith(key) for p in problems), (key, problems)  # the rule of that column itself


def test_deep_verify_refuses_a_geometry_that_is_not_float16_of_shape_3_7_224_224():
    """The card: the geometry column decodes to a (3, 7, 224, 224) float16 array (key arr_0). The same values as
    float32, or float16 at another size, are problems of the row."""
    import numpy as np

    from shard.rules import decoded_problems
    from tests.shard import fakes

    row = fakes.make_row("fly", "merge_edit", "k")
    assert decoded_problems(row) == []
    geom = fakes.geometry(row["combined_sample_hash"], dual=True)
    for wrong in (geom.astype(np.float32), geom.astype(np.float64), geom[:, :, :112, :112], geom[:, :6]):
        problems = decoded_problems({**row, "geometry": fakes.npz_bytes(np.ascontiguousarray(wrong))})
        assert problems == [f"geometry is {wrong.shape} {wrong.dtype}, expected (3, 7, 224, 224) float16"]
