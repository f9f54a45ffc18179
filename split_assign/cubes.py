"""The spatial split: every sample falls in an 80 um cube of its species' canonical bbox; the cube's
split comes from a hash of (species, cube index, salt), never from the data, so adding or removing
samples never moves a cube.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from core.errors import UserError
from core.hashing import unit_interval
from core.release_schema import SPLIT_CUBE_NM, SPLIT_RATIOS, SPLITS

ASSIGNMENT_SCHEMA = pa.schema(
    [
        ("combined_sample_hash", pa.string()),
        ("split", pa.string()),
        ("cube_x", pa.int64()),
        ("cube_y", pa.int64()),
        ("cube_z", pa.int64()),
    ]
)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-9):
        raise UserError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def split_of_unit(u: float, ratios: Sequence[float] = SPLIT_RATIOS) -> str:
    """Map a number in [0, 1) to train / validation / test by the cumulative ratios."""
    if u < ratios[0]:
        return "train"
    if u < ratios[0] + ratios[1]:
        return "validation"
    return "test"


def cube_split(species: str, i: int, j: int, k: int, salt: str, ratios: Sequence[float] = SPLIT_RATIOS) -> str:
    """The split of cube (i, j, k) of `species`: a pure function of the cube, never of its samples."""
    return split_of_unit(unit_interval(species, int(i), int(j), int(k), salt), ratios)


def _check_bbox(bbox_min_nm: Sequence[float], bbox_max_nm: Sequence[float], cube_nm: float) -> tuple[np.ndarray, ...]:
    lo = np.asarray(bbox_min_nm, dtype=np.float64)
    hi = np.asarray(bbox_max_nm, dtype=np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise UserError(f"bbox must be two finite 3-vectors, got {list(bbox_min_nm)} .. {list(bbox_max_nm)}")
    if np.any(hi <= lo):
        raise UserError(f"bbox max must exceed bbox min on every axis, got {lo.tolist()} .. {hi.tolist()}")
    if not (cube_nm > 0 and math.isfinite(cube_nm)):
        raise UserError(f"cube_nm must be a positive number, got {cube_nm}")
    return lo, hi


def cube_indices(
    points: pa.Table, bbox_min_nm: Sequence[float], bbox_max_nm: Sequence[float], cube_nm: float
) -> np.ndarray:
    """(n, 3) int64 cube index per point: floor((point - bbox_min) / cube_nm). Fails naming the sample
    whose coordinate is missing, not finite or outside the bbox (min and max inclusive)."""
    lo, hi = _check_bbox(bbox_min_nm, bbox_max_nm, cube_nm)
    hashes = points.column("combined_sample_hash").to_pylist()
    coords = points.column("coord_nm").to_pylist()
    xyz = np.zeros((len(coords), 3), dtype=np.float64)
    for n, (h, c) in enumerate(zip(hashes, coords, strict=True)):
        if c is None or len(c) != 3 or any(v is None for v in c):
            raise UserError(f"sample {h}: coord_nm must be three numbers, got {c}")
        xyz[n] = c
    bad = ~np.all(np.isfinite(xyz), axis=1) | np.any(xyz < lo, axis=1) | np.any(xyz > hi, axis=1)
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"sample {hashes[n]}: coordinate {xyz[n].tolist()} nm is outside the canonical bbox "
            f"{lo.tolist()} .. {hi.tolist()} nm ({int(bad.sum())} such samples)"
        )
    return np.floor((xyz - lo) / cube_nm).astype(np.int64)


def assign(
    points: pa.Table,
    bbox_min_nm: Sequence[float],
    bbox_max_nm: Sequence[float],
    species: str,
    salt: str,
    cube_nm: float = SPLIT_CUBE_NM,
    ratios: Sequence[float] = SPLIT_RATIOS,
) -> pa.Table:
    """Assign every point to a split by its cube.

    `points`: columns combined_sample_hash, species, coord_nm (list<float64>[3]).
    Returns ASSIGNMENT_SCHEMA rows (combined_sample_hash, split, cube_x, cube_y, cube_z) sorted by hash.
    """
    ratios = check_ratios(ratios)
    for name in ("combined_sample_hash", "species", "coord_nm"):
        if name not in points.column_names:
            raise UserError(f"split points lack the column {name!r} (have {points.column_names})")
    hashes = points.column("combined_sample_hash").to_pylist()
    for h, sp in zip(hashes, points.column("species").to_pylist(), strict=True):
        if h is None:
            raise UserError("split points: a sample has a null combined_sample_hash")
        if sp != species:
            raise UserError(f"sample {h}: species {sp!r} in the split points of species {species!r}")
    seen: set[str] = set()
    dups = sorted({h for h in hashes if h in seen or seen.add(h)})
    if dups:
        raise UserError(f"split points: duplicate combined_sample_hash {dups[:5]} ({len(dups)} in all)")
    cubes = cube_indices(points, bbox_min_nm, bbox_max_nm, cube_nm)
    memo: dict[tuple[int, int, int], str] = {}
    splits = []
    for i, j, k in cubes.tolist():
        key = (i, j, k)
        if key not in memo:
            memo[key] = cube_split(species, i, j, k, salt, ratios)
        splits.append(memo[key])
    order = sorted(range(len(hashes)), key=hashes.__getitem__)
    cubes = cubes[order] if len(order) else cubes.reshape(0, 3)
    return pa.Table.from_arrays(
        [
            pa.array([hashes[n] for n in order], pa.string()),
            pa.array([splits[n] for n in order], pa.string()),
            pa.array(cubes[:, 0], pa.int64()),
            pa.array(cubes[:, 1], pa.int64()),
            pa.array(cubes[:, 2], pa.int64()),
        ],
        schema=ASSIGNMENT_SCHEMA,
    )


def manifest(
    assigned: pa.Table,
    bbox_min_nm: Sequence[float],
    bbox_max_nm: Sequence[float],
    species: str,
    salt: str,
    cube_nm: float = SPLIT_CUBE_NM,
    ratios: Sequence[float] = SPLIT_RATIOS,
) -> dict:
    """The split manifest of one species: the rule, and every occupied cube (sorted by index) with its
    split and sample count. Deterministic: no wall-clock time."""
    ratios = check_ratios(ratios)
    lo, hi = _check_bbox(bbox_min_nm, bbox_max_nm, cube_nm)
    counts: dict[tuple[int, int, int], int] = {}
    xs, ys, zs = (assigned.column(c).to_pylist() for c in ("cube_x", "cube_y", "cube_z"))
    for key in zip(xs, ys, zs, strict=True):
        counts[key] = counts.get(key, 0) + 1
    cubes = []
    per_split = {s: {"cubes": 0, "samples": 0} for s in SPLITS}
    for (i, j, k), n in sorted(counts.items()):
        split = cube_split(species, i, j, k, salt, ratios)
        cubes.append({"index": [i, j, k], "split": split, "n_samples": n})
        per_split[split]["cubes"] += 1
        per_split[split]["samples"] += n
    for s, got in zip(
        assigned.column("combined_sample_hash").to_pylist(), assigned.column("split").to_pylist(), strict=True
    ):
        if got not in per_split:
            raise UserError(f"sample {s}: unknown split {got!r}")
    return {
        "species": species,
        "bbox_nm": {"min": lo.tolist(), "max": hi.tolist()},
        "cube_nm": float(cube_nm),
        "salt": salt,
        "ratios": {"train": ratios[0], "validation": ratios[1], "test": ratios[2]},
        "rule": "cube = floor((point - bbox_min) / cube_nm); u = unit_interval(species, i, j, k, salt); "
        "u < train -> train, u < train + validation -> validation, else test",
        "n_samples": assigned.num_rows,
        "per_split": per_split,
        "cubes": cubes,
    }
