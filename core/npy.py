"""Reading NPY and NPZ arrays one thread at a time.

numpy parses every NPY header with `ast.literal_eval`. On CPython 3.11 the AST builder keeps its recursion count in
state the interpreter's threads share, so two threads parsing at once can fail with a spurious
`SystemError: AST constructor recursion depth mismatch` (CPython gh-106905 and its reports from threaded
applications). It was seen here: a fetch partition of a hostile-twin build crashed on it, its fetch threads
reading fetched samples beside 4 CPU-bound processes. Every NPY/NPZ read of the product holds `PARSE_LOCK`; the
arrays are read under it too (a fetched sample is a few hundred kB: well under a millisecond).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import IO

import numpy as np

PARSE_LOCK = threading.Lock()


def load_npz(source: str | IO[bytes], keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an NPZ (`source`: a path or a binary file), or only those of `keys` it holds; no pickles."""
    with PARSE_LOCK, np.load(source, allow_pickle=False) as arrays:
        wanted = arrays.files if keys is None else [k for k in keys if k in arrays.files]
        return {k: arrays[k] for k in wanted}
