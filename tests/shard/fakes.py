"""Tiny synthetic release rows for the shard tests: seeded geometry (a few discs, compresses well)
encoded as npz, small smooth 224 x 224 PNGs, and render parts / split assignments on disk."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import split_assign
from core.hashing import md5_hex, rng_for
from core.release_schema import EM_COLUMNS, RENDER_PART_SCHEMA, SPLIT_MASK_COLUMNS
from core.samples import task_routing
from shard.rules import SINGLE_TYPES, expected_slots

TYPES = ("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control")
LABELS = {
    "merge_edit": (True, 1.0, None),
    "split_edit": (False, None, 1.0),
    "adjacent_control": (False, 0.0, None),
    "junction_control": (True, None, 0.0),
    "synapse_control": (False, 0.0, None),
}
_ARCHIVE = {"junction_control": "unified_controls_{}", "synapse_control": "unified_controls_{}"}


def _disc(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(40, size - 40, 2)
    r = rng.integers(10, 30)
    return ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r


def geometry(seed: str, dual: bool) -> np.ndarray:
    rng = rng_for("geom", seed)
    g = np.zeros((3, 7, 224, 224), np.float16)
    for v in range(3):
        a = _disc(rng)
        b = _disc(rng) & ~a if dual else np.zeros_like(a)
        sil = a | b
        g[v, 0] = sil
        g[v, 1] = np.where(sil, 0.5, 0)
        g[v, 4] = np.where(sil, 1.0, 0)
        g[v, 5] = a
        g[v, 6] = b
    return g


def npz_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, arr)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def em_png(seed: str) -> bytes:
    rng = rng_for("em", seed)
    a = np.zeros((224, 224, 3), np.uint8)
    a[..., 0] = (np.arange(224)[None, :] + int(rng.integers(0, 100))) % 256
    seg_a = _disc(rng)
    a[..., 1] = seg_a * 255
    a[..., 2] = (_disc(rng) & ~seg_a) * 255  # slices of exclusive labels: never both
    return png_bytes(a)


def split_mask_png(seed: str) -> bytes:
    rng = rng_for("mask", seed)
    a = np.zeros((224, 224), np.uint8)
    a[_disc(rng)] = 128
    a[_disc(rng)] = 255
    return png_bytes(a)


def make_row(species: str, sample_type: str, key: str, has_after_mask: bool | None = None) -> dict:
    """One RENDER_PART_SCHEMA row obeying every rule of the card."""
    archive = _ARCHIVE.get(sample_type, "unified_{}").format(species)
    sah = md5_hex(f"{species}:{sample_type}:{key}")[:12]
    h = md5_hex(f"{archive}|{sah}")
    ham = (sample_type == "split_edit") if has_after_mask is None else has_after_mask
    same, fsc, fmi = LABELS[sample_type]
    row = {
        "combined_sample_hash": h,
        "source_archive_sample_hash": sah,
        "source_archive": archive,
        "sample_type": sample_type,
        "same_neuron": same,
        "false_split_correction_label": fsc,
        "false_merge_identification_label": fmi,
        "species": species,
        "has_em": True,
        "has_after_mask": ham,
        "metadata": json.dumps({"species": species, "key": key, "render_center_nm": [4000.0, 8000.0, 40000.0]},
                               sort_keys=True),  # fmt: skip
        "geometry": npz_bytes(geometry(h, sample_type not in SINGLE_TYPES)),
    }
    for c in EM_COLUMNS:
        row[c] = {"bytes": em_png(h + c), "path": None}
    for c in SPLIT_MASK_COLUMNS:
        row[c] = {"bytes": split_mask_png(h + c), "path": None} if ham else None
    present = {c: row[c] is not None for c in ("geometry", *EM_COLUMNS, *SPLIT_MASK_COLUMNS)}
    row["task_routing"] = task_routing(sample_type, ham)
    row["present_slots"] = expected_slots(present)
    return row


def make_rows(species: str, n: int, seed: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        st = TYPES[i % len(TYPES)]
        ham = None if st != "split_edit" else (i % 3 != 1)  # some split_edits without an after state
        rows.append(make_row(species, st, f"{seed}-{i}", ham))
    return sorted(rows, key=lambda r: r["combined_sample_hash"])


def write_parts(root: Path, species: str, rows: list[dict], rows_per_part: int = 7) -> list[Path]:
    """Sorted rows -> work/<species>/render/part-NNNNN.parquet (RENDER_PART_SCHEMA)."""
    d = root / species / "render"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(rows), rows_per_part):
        p = d / f"part-{k // rows_per_part:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[k : k + rows_per_part], schema=RENDER_PART_SCHEMA), p)
        paths.append(p)
    return paths


def write_split(root: Path, species: str, rows: list[dict], forced: dict[str, str] | None = None) -> Path:
    """A split assignment: each row's split from its hash (or `forced`), written as split.parquet."""
    splits = []
    for i, r in enumerate(rows):
        h = r["combined_sample_hash"]
        splits.append((forced or {}).get(h, ("train", "train", "validation", "test")[i % 4]))
    t = pa.table(
        {
            "combined_sample_hash": [r["combined_sample_hash"] for r in rows],
            "split": splits,
            "cube_x": pa.array([0] * len(rows), pa.int64()),
            "cube_y": pa.array([0] * len(rows), pa.int64()),
            "cube_z": pa.array([0] * len(rows), pa.int64()),
        }
    )
    p = root / species / "split.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, p)
    return p


def write_failures(root: Path, species: str, n: int) -> Path:
    t = pa.table(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "species": [species] * n,
            "sample_type": [TYPES[i % 5] for i in range(n)],
            "stage": ["render" if i % 2 else "fetch" for i in range(n)],
            "reason": ["mesh_missing" if i % 3 else "timeout" for i in range(n)],
            "exception": ["boom"] * n,
        }
    )
    p = root / species / "failures.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, p)
    return p


def build_inputs(root: Path, n_per_species: int = 30, species=("fly", "mouse"), rows_per_part: int = 7) -> dict:
    """Parts, splits and failures of a few species under `root` (the work dir)."""
    parts, splits, failures, manifests = {}, {}, [], {}
    for n, sp in enumerate(species):
        rows = make_rows(sp, n_per_species, seed=n)
        parts[sp] = write_parts(root, sp, rows, rows_per_part)
        splits[sp] = write_split(root, sp, rows)
        if n == 0:  # the first species also has a split manifest
            t = pq.read_table(splits[sp])
            m = split_assign.manifest(t, [0.0] * 3, [1e6] * 3, sp, "fake-salt")
            manifests[sp] = root / sp / "split" / "manifest.json"
            split_assign.write_manifest(manifests[sp], m)
        failures.append(write_failures(root, sp, 3 + n))
    return {"species_parts": parts, "splits": splits, "failures": failures, "split_manifests": manifests}
