"""`make test-stress`: the whole suite, K times, each beside N CPU-bound processes (not run by CI).

CI runs on a shared 2-core machine, where a test that reads state a moment too early, or bounds the wall
clock, fails now and then. This runs the README's test command while N busy loops (default: one per core)
take the CPUs, prints each run's closing line and time, and exits non-zero if any run failed. Each run's
whole output is kept in `--logs` for the failures' tracebacks.

    python -m tests.stress [--burners N] [--runs K] [--logs DIR] [-- PYTEST ARGS]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
BURN = "while True:\n    pass\n"
_CLOSING = re.compile(r"^=*\s*(\d+ (passed|failed).*?)\s*=*$")


def closing_line(output: str) -> str:
    """pytest's closing line ("316 passed in 512.3s"), or the last line when there is none."""
    lines = [line for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        m = _CLOSING.match(line.strip())
        if m:
            return m.group(1)
    return lines[-1] if lines else "(no output)"


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--burners", type=int, default=os.cpu_count() or 1, show_default=True, help="CPU-bound processes")
@click.option("--runs", type=int, default=3, show_default=True, help="whole-suite runs, one after the other")
@click.option("--logs", type=click.Path(path_type=Path), default=Path("work") / "stress", show_default=True)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def main(burners: int, runs: int, logs: Path, pytest_args: tuple[str, ...]) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    hogs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(burners)]
    results = []
    try:
        click.echo(f"test-stress: {runs} runs of the suite beside {burners} CPU-bound processes (logs in {logs})")
        for k in range(1, runs + 1):
            start = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", *pytest_args], cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            took = time.monotonic() - start
            (logs / f"run-{k}.log").write_text(proc.stdout + proc.stderr)
            ok = proc.returncode == 0
            results.append(ok)
            click.echo(f"run {k}/{runs}: {'PASS' if ok else 'FAIL'} ({closing_line(proc.stdout)}) in {took:.0f} s")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    click.echo(f"test-stress: {sum(results)} of {runs} runs passed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
