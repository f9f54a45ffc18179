"""Disk and the shard stage, per sample, on the demo (issue 25 items 4 and 5): what `plan`'s DISK_COSTS and
SHARD_COSTS are, and `keep_fetched` both ways.

Two builds of the demo from the same world: `keep_fetched: true` (the default) and `false`. Printed: the work dir's
bytes per sample (fetched files, render parts, bank) and the release's per row, both work dirs' totals beside
`plan`'s estimate for the same rows, whether the two releases are byte-identical (`shards.csv`), and, with the files
dropped, a re-render with another seed: how many samples it fetched again against how many it rendered. Then the
shard stage (write_release, in this process) over the demo's rows, and over the demo's rows copied 8 times under new
hashes (~3,000 rows: the stage's fixed costs, the card's figure and the report, weigh less), rows and MB per second.

    .venv/bin/python -m benchmarks.bench_disk
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.bench_incremental import _seed_world
from benchmarks.common import BENCH_WORK
from config.schema import CONFIG_DIR
from core.hashing import md5_hex
from pipeline.plan import TWIN_COSTS, estimate_build
from pipeline.runner import parse_summaries

ROOT = (BENCH_WORK / "disk").resolve()
COPIES = 8


def _config(folder: Path, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text()), **overrides}
    (folder / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    return folder


def _build(work: Path, out: Path, config_dir: Path) -> tuple[str, str, float]:
    env = {**os.environ, "CB2_CONFIG_DIR": str(config_dir)}
    cmd = [sys.executable, "-m", "pipeline", "build", "--work", str(work), "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout, proc.stderr, time.perf_counter() - start


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def measure_dir(work: Path, out: Path) -> dict:
    """Bytes of each part of a demo work dir and release, and the counts they are per."""
    sp = work / "demo"
    fetched = list((sp / "fetch" / "samples").glob("*/*.npz"))
    render = list((sp / "render").glob("part-?????.parquet"))
    bank = [*(p for unit in ("roots", "bank", "select") for p in (sp / unit).rglob("*")), sp / "bank.parquet"]
    rows_rendered = sum(pq.ParquetFile(p).metadata.num_rows for p in render)
    bank_rows = pq.ParquetFile(sp / "bank.parquet").metadata.num_rows
    shards = [p for d in ("train", "val", "test") for p in (out / d).glob("*.parquet")]
    release_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    everything = [p for p in sp.rglob("*") if "world" not in p.relative_to(sp).parts[:1]]
    return {
        "fetched_files": len(fetched), "fetched": _bytes(fetched), "render": _bytes(render), "bank": _bytes(bank),
        "rows_rendered": rows_rendered, "bank_rows": bank_rows, "release": _bytes(shards),
        "release_rows": release_rows, "work": _bytes(everything),
    }  # fmt: skip


def _copied_release(work: Path, dest: Path, copies: int) -> tuple[dict, dict]:
    """The demo's render parts and split, `copies` times under new hashes (sorted, in parts of ~64 rows)."""
    sp = work / "demo"
    table = pa.concat_tables([pq.read_table(p) for p in sorted((sp / "render").glob("part-?????.parquet"))])
    split = dict(zip(*pq.read_table(sp / "split.parquet", columns=["combined_sample_hash", "split"]).to_pydict()
                     .values(), strict=True))  # fmt: skip
    rows = table.to_pylist()
    out, splits = [], []
    for k in range(copies):
        for r in rows:
            sah = md5_hex(f"{k}:{r['source_archive_sample_hash']}")[:12]
            h = md5_hex(f"{r['source_archive']}|{sah}")
            out.append({**r, "source_archive_sample_hash": sah, "combined_sample_hash": h})
            splits.append((h, split[r["combined_sample_hash"]]))
    out.sort(key=lambda r: r["combined_sample_hash"])
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(out), 64):
        path = dest / f"part-{i // 64:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(out[i : i + 64], schema=table.schema), path)
        parts.append(path)
    split_path = dest / "split.parquet"
    pq.write_table(pa.table({"combined_sample_hash": [h for h, _ in splits], "split": [s for _, s in splits]}),
                   split_path)  # fmt: skip
    return {"demo": parts}, {"demo": split_path}


def shard_rate(work: Path, shard_bytes: int) -> dict:
    """write_release over the demo's render parts, then over COPIES copies of them: rows and MB per second."""
    from shard.release import write_release

    sp = work / "demo"
    results = {}
    inputs = {"demo": ({"demo": sorted((sp / "render").glob("part-?????.parquet"))}, {"demo": sp / "split.parquet"})}
    inputs[f"demo x {COPIES}"] = _copied_release(work, ROOT / "copies", COPIES)
    for name, (parts, splits) in inputs.items():
        out = ROOT / "shard-out"
        start = time.perf_counter()
        summary = write_release(parts, splits, [], out, shard_bytes=shard_bytes)
        seconds = time.perf_counter() - start
        written = sum(r["size"] for r in summary["shard_list"])
        results[name] = {"rows": summary["total_rows"], "seconds": seconds, "mb": written / 1e6}
        r = results[name]
        print(f"shard stage (write_release, one process) over {name} ({r['rows']:,} rows, {r['mb']:.0f} MB of shards, "
              f"target {shard_bytes / 1e6:g} MB): {r['seconds']:.1f} s = {r['rows'] / r['seconds']:,.0f} rows/s, "
              f"{r['mb'] / r['seconds']:,.0f} MB/s")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ROOT / "copies", ignore_errors=True)
    return results


def run() -> dict:
    shutil.rmtree(ROOT, ignore_errors=True)
    base = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    got = {}
    for name, keep in (("keep", True), ("drop", False)):
        work, out = ROOT / f"work-{name}", ROOT / f"out-{name}"
        _seed_world(work)
        first = ROOT / "work-keep" / "demo" / "world"
        if not (work / "demo" / "world").exists() and (first / "world.json").exists():
            shutil.copytree(first, work / "demo" / "world")  # the same seed: generated once
        text, _, seconds = _build(work, out, _config(ROOT / f"cfg-{name}", keep_fetched=keep))
        got[name] = {**measure_dir(work, out), "seconds": seconds, "summaries": parse_summaries(text)}
    k, d = got["keep"], got["drop"]
    per = {
        "fetched_kb_per_sample": k["fetched"] / k["fetched_files"] / 1e3,
        "render_kb_per_row": k["render"] / k["rows_rendered"] / 1e3,
        "release_kb_per_row": k["release"] / k["release_rows"] / 1e3,
        "bank_kb_per_row": k["bank"] / k["bank_rows"] / 1e3,
    }
    print(f"demo, per sample: fetched {per['fetched_kb_per_sample']:.0f} KB ({k['fetched_files']} files), render parts "
          f"{per['render_kb_per_row']:.0f} KB per rendered row, release {per['release_kb_per_row']:.0f} KB per row, "
          f"bank {per['bank_kb_per_row']:.2f} KB per bank row ({k['bank_rows']} rows)")  # fmt: skip
    est = estimate_build(k["release_rows"], TWIN_COSTS["cutout_voxels"], 2, base.get("fetch_threads", 8),
                         base.get("partition_rows", 64))  # fmt: skip
    print(f"work dir (world left out), keep_fetched true: {k['work'] / 1e6:.1f} MB measured, "
          f"{1e3 * est.disk_gb['work_keep']:.1f} MB by plan's figures; false: {d['work'] / 1e6:.1f} MB measured "
          f"({d['fetched_files']} fetched files left), {1e3 * est.disk_gb['work_drop']:.1f} MB by plan (at most, "
          f"2 workers' partitions in flight); release {k['release'] / 1e6:.1f} MB, plan "
          f"{1e3 * est.disk_gb['release']:.1f} MB")  # fmt: skip
    same = (ROOT / "out-keep" / "shards.csv").read_bytes() == (ROOT / "out-drop" / "shards.csv").read_bytes()
    print(f"the two releases: shards.csv {'byte-identical' if same else 'DIFFER'}; builds {k['seconds']:.0f} s "
          f"(keep) and {d['seconds']:.0f} s (drop), the world copied")  # fmt: skip
    text, err, seconds = _build(ROOT / "work-drop", ROOT / "out-drop",
                                _config(ROOT / "cfg-reseed", keep_fetched=False, seed=base["seed"] + 1))  # fmt: skip
    said = [line for line in err.splitlines() if "fetched again" in line]
    fetched_again = sum(int(line.split(": ")[1].split(" ")[0]) for line in said)
    render = parse_summaries(text)["render"]
    left = len(list((ROOT / "work-drop" / "demo" / "fetch" / "samples").glob("*/*.npz")))
    print(f"re-render with another seed after dropping: {fetched_again} samples fetched again ({len(said)} lines on "
          f"stderr), {render['samples'] + render['failures']} rendered, {render['reused']} reused; {seconds:.0f} s; "
          f"fetched files left after it: {left}")  # fmt: skip
    rates = shard_rate(ROOT / "work-keep", 250_000_000)
    return {"keep": k, "drop": d, "per_sample": per, "identical": same, "fetched_again": fetched_again,
            "shard": rates}  # fmt: skip


if __name__ == "__main__":
    run()
