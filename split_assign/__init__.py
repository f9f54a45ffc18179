"""The 80 um cube hasher and the split manifest (ARCHITECTURE.md, contract §5)."""

from __future__ import annotations

import os

import pyarrow as pa

from core import atomic
from split_assign.cubes import (
    ASSIGNMENT_SCHEMA,
    assign,
    check_ratios,
    cube_indices,
    cube_split,
    manifest,
    split_of_unit,
)

__all__ = [
    "ASSIGNMENT_SCHEMA",
    "assign",
    "check_ratios",
    "cube_indices",
    "cube_split",
    "manifest",
    "split_of_unit",
    "write_assignment",
    "write_manifest",
]


def write_assignment(path: str | os.PathLike, assigned: pa.Table) -> None:
    """Write the assignment table (work/<species>/split.parquet) atomically."""
    atomic.write_parquet(path, assigned.cast(ASSIGNMENT_SCHEMA))


def write_manifest(path: str | os.PathLike, manifest_dict: dict) -> None:
    """Write work/<species>/split/manifest.json atomically (sorted keys, deterministic)."""
    atomic.write_json(path, manifest_dict)
