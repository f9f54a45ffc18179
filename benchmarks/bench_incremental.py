"""Cost follows change: what a rebuild redoes after a small change, against the first build, on the demo.

One work dir goes through: a first build; every budget raised by 5% (new rows); another `seed` (a new camera);
another `split_salt`. Each step's fetch and render counts (samples built, reused) are read off the build's
summary lines, beside the first build's. Then a from-scratch build of the final config must give the same
`shards.csv`, byte for byte.

    .venv/bin/python -m benchmarks.bench_incremental
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.common import BENCH_WORK
from config.schema import CONFIG_DIR
from pipeline.runner import parse_summaries

ROOT = (BENCH_WORK / "incremental").resolve()


def _config(folder: Path, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text()), **overrides}
    (folder / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    return folder


def _build(work: Path, out: Path, config_dir: Path) -> str:
    env = {**os.environ, "CB2_CONFIG_DIR": str(config_dir)}
    cmd = [sys.executable, "-m", "pipeline", "build", "--work", str(work), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _seed_world(work: Path) -> None:
    """Copy an existing demo world rather than generate it again (it is the same seed)."""
    world = work / "demo" / "world"
    for cand in (Path("work") / "demo" / "world", BENCH_WORK / "pipeline" / "work" / "demo" / "world"):
        if (cand / "world.json").exists() and not world.exists():
            shutil.copytree(cand, world)


def run() -> dict:
    shutil.rmtree(ROOT, ignore_errors=True)
    work, out = ROOT / "work", ROOT / "out"
    _seed_world(work)
    base = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    budgets = {t: round(n * 1.05) for t, n in base["budgets"].items()}
    steps = {
        "first build": {},
        "budgets +5%": {"budgets": budgets},
        "seed changed": {"budgets": budgets, "seed": base["seed"] + 1},
        "split_salt changed": {"budgets": budgets, "seed": base["seed"] + 1, "split_salt": "bench-salt"},
    }
    figures = {}
    for i, (name, overrides) in enumerate(steps.items()):
        cfg_dir = _config(ROOT / f"cfg-{i}", **overrides)
        text = _build(work, out, cfg_dir)
        s = parse_summaries(text)
        rows = int(text.split(" bank rows")[0].rsplit(" ", 1)[-1])
        figures[name] = {"bank_rows": rows, **{st: s[st] for st in ("fetch", "render")}}
    first = figures["first build"]
    print(f"{'step':<20} {'bank rows':>9} {'fetched':>8} {'rendered':>9} {'reused (f/r)':>13}")
    for name, f in figures.items():
        fetched = f["fetch"]["samples"] + f["fetch"]["failures"]
        rendered = f["render"]["samples"] + f["render"]["failures"]
        print(f"{name:<20} {f['bank_rows']:>9} {fetched:>8} {rendered:>9} "
              f"{f['fetch']['reused']:>6}/{f['render']['reused']:<6}")  # fmt: skip
    new_rows = figures["budgets +5%"]["bank_rows"] - first["bank_rows"]
    more = figures["budgets +5%"]
    redone = max(more[st]["samples"] + more[st]["failures"] for st in ("fetch", "render"))
    print(f"budgets +5%: {new_rows} new rows; fetch and render redid at most {redone} samples "
          f"({redone / max(new_rows, 1):.2f}x the new rows; the first build did {first['fetch']['samples']} / "
          f"{first['render']['samples']})")  # fmt: skip
    print(
        f"seed changed: {figures['seed changed']['fetch']['samples']} samples refetched; "
        f"split_salt changed: {figures['split_salt changed']['render']['samples']} samples re-rendered"
    )
    scratch_work, scratch_out = ROOT / "scratch-work", ROOT / "scratch-out"
    _seed_world(scratch_work)
    if not (scratch_work / "demo" / "world").exists():
        shutil.copytree(work / "demo" / "world", scratch_work / "demo" / "world")
    _build(scratch_work, scratch_out, ROOT / f"cfg-{len(steps) - 1}")
    same = (scratch_out / "shards.csv").read_bytes() == (out / "shards.csv").read_bytes()
    print(f"from-scratch build of the final config: shards.csv {'byte-identical' if same else 'DIFFERS'}")
    return {"steps": figures, "new_rows": new_rows, "identical": same}


if __name__ == "__main__":
    run()
