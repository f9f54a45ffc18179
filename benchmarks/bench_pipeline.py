"""Per-sample CPU cost of fetch, geometry, EM views, split masks and encoding on the demo, and beside it,
measured in the same run on the same arrays, the floor: encoding alone (the npz and the PNGs).

    .venv/bin/python -m benchmarks.bench_pipeline [--per-type 15]
"""

from __future__ import annotations

import argparse

import pyarrow.parquet as pq

from benchmarks.common import CpuTimer, demo_context
from core.errors import SampleError
from core.release_schema import EM_COLUMNS, SPLIT_MASK_COLUMNS
from pipeline.runner import run_stage
from pipeline.sources import open_source
from pipeline.stages.fetch_sample import fetch_sample
from pipeline.stages.render import render_row
from pipeline.stages.species import species_graph
from render.encode import decode_geometry, decode_png, encode_geometry, encode_png
from sim.demo_world import ensure_world

STEPS = ("geometry", "em_views", "split_masks", "encode")


def pick(bank: list[dict], per_type: int) -> list[dict]:
    seen: dict[str, int] = {}
    rows = []
    for row in bank:
        if seen.get(row["sample_type"], 0) < per_type:
            seen[row["sample_type"]] = seen.get(row["sample_type"], 0) + 1
            rows.append(row)
    return rows


def run(per_type: int = 15) -> dict:
    ctx = demo_context("pipeline")
    ensure_world(ctx)
    bank = species_graph(ctx)
    for unit in ("roots", "bank", "select"):  # the bank: its roots, batches, selection
        run_stage(bank, unit, scheduler="sync", progress=False)
    source = open_source(ctx)
    rows = pick(pq.read_table(ctx.bank_path).to_pylist(), per_type)
    timer, floor = CpuTimer(), CpuTimer()
    n = 0
    for row in rows:
        try:
            with timer("fetch"):
                sample = fetch_sample(source, ctx.cfg, row)
            out = render_row(row, sample, ctx.cfg, timer=timer)
        except SampleError:
            continue
        n += 1
        geometry = decode_geometry(out["geometry"])
        images = [decode_png(out[c]["bytes"]) for c in EM_COLUMNS + SPLIT_MASK_COLUMNS if out[c] is not None]
        with floor("floor"):
            encode_geometry(geometry)
            for image in images:
                encode_png(image)
    ms = {k: 1000 * v / n for k, v in timer.seconds.items()}
    render_total = sum(ms[s] for s in STEPS)
    floor_ms = 1000 * floor.seconds["floor"] / n
    print(f"demo per-sample CPU cost over {n} samples ({per_type} per type), ms/sample:")
    for step in ("fetch", *STEPS):
        print(f"  {step:<12} {ms[step]:8.1f}")
    print(f"  {'render+enc':<12} {render_total:8.1f}  -> {1000 / render_total:.1f} samples/s/core")
    print(f"  {'floor':<12} {floor_ms:8.1f}  (encoding alone, same arrays, same run)")
    print(f"  ratio render+encode / floor = {render_total / floor_ms:.2f}")
    total = render_total + ms["fetch"]
    print(f"  fetch+render+encode {total:.1f} ms -> {1000 / total:.1f} samples/s/core")
    return {"ms": ms, "render_total_ms": render_total, "floor_ms": floor_ms, "total_ms": total, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=15)
    run(ap.parse_args().per_type)


if __name__ == "__main__":
    main()
