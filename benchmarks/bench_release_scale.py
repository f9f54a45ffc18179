"""The release writer and its report at the full release's row count, on synthetic rows (issue 25 item 3).

1. `python -m pipeline report` (shard/release.py: rewrite_report) over synthetic sidecars of 10^4, 10^5 and 10^6 rows
   (the release has 716,485), each run in a child process: its peak RSS and wall time. The sidecars are streamed,
   so the peak must not grow with the rows (before: ~0.9 kB per row, 836 MB at 716,485 rows).
2. Shards against `shard_bytes` for payloads that zstd cannot shrink, shrinks ~3x and shrinks ~100x: each shard's
   size on disk (its footer included) over the target, and the footer's share of the bytes (before: shards of
   highly compressible rows overshot by ~60%, the footer 38% of a file). Rows are ~0.1-1% of the target, as the
   release's ~270 KB rows are of 250 MB.

    .venv/bin/python -m benchmarks.bench_release_scale [--rows 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.release_schema import (
    EM_COLUMNS,
    METADATA_SIDECAR_SCHEMA,
    RELEASE_SCHEMA,
    SPLIT_DIRS,
    SPLIT_MASK_COLUMNS,
    SPLITS,
)
from core.samples import SAMPLE_TYPES, task_routing
from render.encode import encode_geometry, encode_png

SPECIES = ("fly", "mouse", "human", "zebrafish")
GALLERY_SHARD = "train/train-00000.parquet"
CHUNK = 100_000


def _gallery_rows() -> list[dict]:
    """Three decodable rows of each species and type, whose hashes (a leading 0) come before every other row's."""
    yy, xx = np.mgrid[:224, :224]
    disc = ((yy - 112) ** 2 + (xx - 112) ** 2) < 40**2
    geom = np.zeros((3, 7, 224, 224), np.float16)
    geom[:, 0] = disc
    geom[:, 5] = disc
    em = np.zeros((224, 224, 3), np.uint8)
    em[..., 0] = (xx * 255 // 223).astype(np.uint8)
    em[..., 1] = disc * 255
    geometry, png = encode_geometry(geom), encode_png(em)
    rows = []
    for s, sp in enumerate(SPECIES):
        for t, st in enumerate(SAMPLE_TYPES):
            for k in range(3):
                rows.append({
                    "combined_sample_hash": f"0{s}{t}{k}".ljust(32, "0"), "source_archive_sample_hash": f"{s}{t}{k}",
                    "source_archive": f"unified_{sp}", "sample_type": st, "same_neuron": True,
                    "task_routing": task_routing(st, False), "false_split_correction_label": None,
                    "false_merge_identification_label": 1.0, "split": "train", "species": sp, "has_em": True,
                    "has_after_mask": False, "present_slots": [], "metadata": json.dumps({"species": sp}),
                    "geometry": geometry, **{c: {"bytes": png, "path": None} for c in EM_COLUMNS},
                    **dict.fromkeys(SPLIT_MASK_COLUMNS),
                })  # fmt: skip
    return rows


def _sidecar_chunk(rng: np.random.Generator, start: int, n: int, split: str) -> pa.Table:
    """`n` sidecar rows of `split` with random hashes after the gallery's (first hex digit 1-f)."""
    raw = rng.bytes(16 * n)
    hashes = [format(1 + b % 15, "x") + raw[16 * i + 1 : 16 * i + 16].hex() + "0" for i, b in
              enumerate(raw[::16])]  # fmt: skip
    idx = np.arange(start, start + n)
    species = np.array(SPECIES)[idx % len(SPECIES)]
    types = np.array(SAMPLE_TYPES)[(idx // len(SPECIES)) % len(SAMPLE_TYPES)]
    meta = [json.dumps({"operation_id": int(i), "root_id": 720575940000000000 + int(i), "timestamp": 1700000000,
                        "edit_point_nm": [1000.0 + i % 97, 2000.0, 3000.0]}) for i in idx]  # fmt: skip
    return pa.table({
        "combined_sample_hash": hashes, "source_archive_sample_hash": [h[:12] for h in hashes],
        "source_archive": [f"unified_{s}" for s in species], "sample_type": types.tolist(),
        "same_neuron": [True] * n, "task_routing": [["merge"]] * n, "false_split_correction_label": [None] * n,
        "false_merge_identification_label": [1.0] * n, "split": [split] * n, "species": species.tolist(),
        "has_em": [True] * n, "has_after_mask": [False] * n, "present_slots": [["geometry"]] * n, "metadata": meta,
        "shard_path": [GALLERY_SHARD] * n,
    }).cast(METADATA_SIDECAR_SCHEMA)  # fmt: skip


def make_release(out: Path, n_rows: int) -> None:
    """A release's sidecars of `n_rows` rows (80/10/10 train, val, test; plus the gallery rows), the one shard the
    gallery rows are read from, and shards.csv."""
    rng = np.random.default_rng(0)
    gallery = _gallery_rows()
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(gallery, schema=RELEASE_SCHEMA), out / GALLERY_SHARD, row_group_size=32)
    shares = {"train": 0.8, "validation": 0.1, "test": 0.1}
    for split in SPLITS:
        n = int(n_rows * shares[split])
        with pq.ParquetWriter(out / "metadata" / f"{SPLIT_DIRS[split]}.parquet", METADATA_SIDECAR_SCHEMA) as w:
            if split == "train":
                small = [{k: r[k] for k in METADATA_SIDECAR_SCHEMA.names if k != "shard_path"} for r in gallery]
                t = pa.Table.from_pylist(small).append_column("shard_path", pa.array([GALLERY_SHARD] * len(small)))
                w.write_table(t.cast(METADATA_SIDECAR_SCHEMA))
            for start in range(0, n, CHUNK):
                w.write_table(_sidecar_chunk(rng, start, min(CHUNK, n - start), split), row_group_size=8192)
    with open(out / "shards.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "sha256", "n_samples", "size", "split", "shard_id"),
                                  (GALLERY_SHARD, "0" * 64, n_rows, 1, "train", 0)])  # fmt: skip


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM: its own address space's; ru_maxrss also counts what the parent held when it
    forked)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _report_child(out: str) -> None:
    from shard.release import rewrite_report

    before = _hwm_mb()
    start = time.perf_counter()
    rewrite_report(Path(out), [], {}, {})
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _hwm_mb(), "rss_after_imports_mb": before}))


def report_memory(sizes: tuple[int, ...]) -> dict[int, dict]:
    results = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="cb2-report-") as tmp:
            out = Path(tmp) / "out"
            make_release(out, n)
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_release_scale", "--report-child", str(out)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            sidecar_mb = sum(p.stat().st_size for p in (out / "metadata").glob("*.parquet")) / 1e6
        r = results[n]
        print(f"report over {n:>9,} sidecar rows ({sidecar_mb:6.1f} MB of sidecars): peak RSS "
              f"{r['peak_rss_mb']:5.0f} MB ({r['rss_after_imports_mb']:.0f} MB after imports), {r['seconds']:5.1f} s")
    small, large = min(sizes), max(sizes)
    print(f"report peak RSS at {large:,} / at {small:,} rows: "
          f"{results[large]['peak_rss_mb'] / results[small]['peak_rss_mb']:.2f}x for {large // small:,}x the rows")
    return results


def _rows(n: int, kind: str, size: int, rng: np.random.Generator) -> pa.Table:
    """`n` train rows whose geometry and 4 EM images are `size` bytes each after their magic bytes: random, a third
    random then zeros (~3x), or zeros (~100x)."""
    def body() -> bytes:
        if kind == "incompressible":
            return rng.bytes(size)
        if kind == "3x":
            return rng.bytes(size // 3) + bytes(size - size // 3)
        return bytes(size)

    base = _gallery_rows()[0]
    rows = []
    for i in range(n):
        row = {**base, "combined_sample_hash": f"{i:032x}", "geometry": b"PK\x03\x04" + body()}
        for c in EM_COLUMNS:
            row[c] = {"bytes": b"\x89PNG\r\n\x1a\n" + body(), "path": None}
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA)


def shard_landing() -> dict[str, dict]:
    from shard.release import _Part, _payload_bytes, _SplitWriter

    rng = np.random.default_rng(1)
    cases = {"incompressible": (800, 4_000_000), "3x": (1_600, 2_500_000), "100x": (12_000, 500_000)}
    results = {}
    for kind, (n, target) in cases.items():
        table = _rows(n, kind, 5_000, rng)
        with tempfile.TemporaryDirectory(prefix="cb2-shards-") as tmp:
            writer = _SplitWriter("train", Path(tmp), target, row_group_rows=32)
            part = _Part(Path(tmp) / "part.parquet", table, [], _payload_bytes(table))
            start = time.perf_counter()
            for i in range(table.num_rows):
                writer.add(part, i)
            writer.close()
            seconds = time.perf_counter() - start
            sizes = [s["size"] for s in writer.shards]
            footers = [pq.ParquetFile(Path(tmp) / s["path"]).metadata.serialized_size for s in writer.shards]
        ratios = [s / target for s in sizes[:-1]]
        results[kind] = {"shards": len(sizes), "min": min(ratios), "max": max(ratios),
                         "footer_share": sum(footers) / sum(sizes), "payload_mb": sum(_payload_bytes(table)) / 1e6,
                         "written_mb": sum(sizes) / 1e6, "seconds": seconds}  # fmt: skip
        r = results[kind]
        print(f"shards of {kind:>14} rows (25 kB payload each, target {target / 1e6:g} MB): {r['shards']} shards, "
              f"size / target {r['min']:.3f}-{r['max']:.3f} (all but the last), footer {100 * r['footer_share']:.1f}% "
              f"of the bytes, {r['payload_mb']:.0f} MB payload -> {r['written_mb']:.1f} MB written")  # fmt: skip
    return results


def run(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> dict:
    return {"report": report_memory(sizes), "shards": shard_landing()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report-child":
        _report_child(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    run(tuple(ap.parse_args().rows))


if __name__ == "__main__":
    main()
