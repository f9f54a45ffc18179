"""Verify throughput beside plain `sha256sum` of the same shard files, in the same run.

.venv/bin/python -m benchmarks.bench_verify [--out out]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import time
from pathlib import Path

from shard.verify import verify_release


def run(out: Path) -> dict | None:
    if not (out / "shards.csv").exists():
        print(f"verify: no release at {out} (run `make build` first); skipped")
        return None
    paths = [out / row["path"] for row in csv.DictReader((out / "shards.csv").open())]
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    start = time.perf_counter()
    report = verify_release(out)
    verify_s = time.perf_counter() - start
    line = f"verify: {len(paths)} shards, {total_mb:.1f} MB in {verify_s:.3f} s = {total_mb / verify_s:.0f} MB/s"
    result = {"verify_mb_s": total_mb / verify_s, "ok": report.ok}
    if shutil.which("sha256sum"):
        start = time.perf_counter()
        subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True)
        plain_s = time.perf_counter() - start
        result["sha256sum_mb_s"] = total_mb / plain_s
        line += f"; sha256sum {total_mb / plain_s:.0f} MB/s; ratio verify / sha256sum {plain_s / verify_s:.2f}"
    start = time.perf_counter()
    deep = verify_release(out, deep=True)
    deep_s = time.perf_counter() - start
    line += f"\nverify --deep: {deep.rows_checked} rows in {deep_s:.1f} s = {deep.rows_checked / deep_s:.0f} rows/s"
    print(line)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("out"))
    run(ap.parse_args().out)


if __name__ == "__main__":
    main()
