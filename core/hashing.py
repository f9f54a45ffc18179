"""The one place hashes are made: sample keys, seeded random draws, split hashing, file digests.

Never Python's salted `hash()`: every value here is the same on every machine and run.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

# Files are hashed through one reused 8 MiB buffer per thread (readinto, no allocation per read): hashlib's
# OpenSSL update releases the GIL on large buffers, so threads hashing different files run in parallel.
_BUFFER = 8 << 20
_local = threading.local()


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def key_of(*parts: object) -> str:
    """Canonical text of a tuple of parts, joined with '|'."""
    return "|".join(str(p) for p in parts)


def unit_interval(*parts: object) -> float:
    """A uniform number in [0, 1) determined by `parts` (sha256 of their canonical key)."""
    digest = hashlib.sha256(key_of(*parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def seed_of(*parts: object) -> int:
    digest = hashlib.sha256(key_of(*parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy generator seeded from the identity of what it draws for."""
    return np.random.default_rng(seed_of(*parts))


def sha256_file(path: str | os.PathLike) -> str:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(_BUFFER)
    view = memoryview(buf)
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
