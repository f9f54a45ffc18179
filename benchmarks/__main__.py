"""`make bench`: every benchmark, printing figures and ratios measured in the same run."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import (
    bench_bank_scale,
    bench_disk,
    bench_hostile,
    bench_incremental,
    bench_l2skeleton,
    bench_latency,
    bench_pipeline,
    bench_pipeline_scale,
    bench_release_scale,
    bench_render_core,
    bench_scaling,
    bench_twin,
    bench_verify,
)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--out", type=Path, default=Path("out"), help="release to time verify on")
    ap.add_argument("--per-type", type=int, default=15)
    ap.add_argument("--sizes", type=int, nargs=2, default=(9, 36))
    ap.add_argument("--twin-per-type", type=int, default=10)
    ap.add_argument("--bank-roots", type=int, default=20_000, help="proofread roots of the bank-at-scale world")
    ap.add_argument("--scale-samples", type=int, nargs="*", default=[2_000],
                    help="samples of the pipeline-at-scale runs (none: skip it; 20000: ~2 h and ~25 GB on 2 cores)")
    args = ap.parse_args()
    print("== render core on synthetic meshes (no I/O), against the encoding floor ==")
    bench_render_core.run()
    print("\n== per-sample cost on the demo (issue: render) ==")
    cost = bench_pipeline.run(args.per_type)
    print("\n== verify throughput ==")
    bench_verify.run(args.out)
    print("\n== cost follows change (issue: work model) ==")
    bench_incremental.run()
    print("\n== real sources: requests and bytes per sample through the twin (issue 10) ==")
    bench_twin.run(args.twin_per_type)
    print("\n== skeletons from level-2 graphs: branch points against the world's (issue 16) ==")
    bench_l2skeleton.run()
    print("\n== fetch + render per worker through the twin at 0, 30, 100 ms latency (issue 10) ==")
    bench_latency.run()
    print("\n== fetch + render per worker: hostile twin at 30 ms median / kind twin at 0 ms (issue 16) ==")
    bench_latency.run_hostile()
    print("\n== requests per endpoint: hostile twin / kind twin, same build, at 0 and 200 ms (issue 24) ==")
    bench_hostile.run()
    print("\n== bank at scale: 20,000 proofread roots behind the hostile twin at 30 ms (issue 17) ==")
    bench_bank_scale.run(args.bank_roots)
    print("\n== scaling ==")
    bench_scaling.run(tuple(args.sizes), per_sample_cpu_ms=cost["total_ms"])
    print("\n== the release at 10^4-10^6 rows: the report's peak RSS, shards against their byte target (issue 25) ==")
    bench_release_scale.run()
    print("\n== disk per sample, keep_fetched both ways, the shard stage's rate: plan's figures (issue 25) ==")
    bench_disk.run()
    if args.scale_samples:
        print("\n== pipeline at scale: bank -> report on a dask cluster, hostile twin, kill -9s (issue 25) ==")
        bench_pipeline_scale.run(args.scale_samples)


if __name__ == "__main__":
    main()
