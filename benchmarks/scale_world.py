"""The world and the config of the pipeline-at-scale bench: the demo world generated at the size a sample count
needs, and the demo config pointed at it with every candidate kept and the real species' partition and shard sizes.

Why the demo world, generated in full: fetch and render need everything a real dataset serves (EM and supervoxel
chunks, meshes, level-2 graphs, roots at a time) and the demo world has all of it, from a seed, neurites packed in
each site; `sim/twin/scale.py` (the bank's world at scale) has no voxels and no meshes. The cost is the disk and the
time to write it (~4 MB and ~1 s of CPU per site), paid once per size and reused by every run of that size.

    .venv/bin/python -m benchmarks.scale_world 20000     # generate the world for 20,000 samples (if missing)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import yaml

from benchmarks.common import BENCH_WORK
from config import load_config
from pipeline.context import BuildContext

# rows per site with every candidate kept (6 neurons per site): 720 bank rows and 626 released from 27 sites through
# the hostile twin (2026-12-07); 23 gives the samples asked after the item faults and the space between sites
ROWS_PER_SITE = 23
# the real species' sizes (config/fly.yaml): how work is cut and shards close, not the demo's tiny ones
PARTITION_ROWS = 256
SHARD_BYTES = 250_000_000


def scale_root(samples: int) -> Path:
    return (BENCH_WORK / f"pipeline-scale-{samples}").resolve()


def n_sites(samples: int) -> int:
    return max(1, math.ceil(samples / ROWS_PER_SITE))


def write_config_dir(samples: int) -> Path:
    """A config dir holding the demo config at this size (CB2_CONFIG_DIR): every candidate, the real sizes."""
    cfg = load_config("demo")
    cfg = cfg.model_copy(update={
        "budgets": cfg.budgets.model_copy(update=dict.fromkeys(type(cfg.budgets).model_fields)),
        "partition_rows": PARTITION_ROWS,
        "shard_bytes": SHARD_BYTES,
        "demo_world": cfg.demo_world.model_copy(update={"n_sites": n_sites(samples)}),
    })  # fmt: skip
    config_dir = scale_root(samples) / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "demo.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
    return config_dir


def world_dir(samples: int) -> Path:
    return scale_root(samples) / "world" / "demo" / "world"


def ensure_scale_world(samples: int) -> tuple[Path, float]:
    """Generate the world for `samples` (when missing); returns its dir and the seconds spent generating it."""
    from sim.demo_world import ensure_world

    cfg = load_config("demo", write_config_dir(samples))
    start = time.perf_counter()
    ensure_world(BuildContext("demo", cfg, world_dir(samples).parent.parent, scale_root(samples) / "unused-out"))
    return world_dir(samples), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale_world")
    ap.add_argument("samples", type=int)
    args = ap.parse_args()
    world, seconds = ensure_scale_world(args.samples)
    print(f"world for {args.samples:,} samples ({n_sites(args.samples)} sites): {world} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
