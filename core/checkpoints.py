"""Named points in a build where a test can kill it or hold it: test hooks, inert unless asked for.

A test that kills a build "mid-render" by watching for files races the build: on a busy machine the build
may finish before the watcher looks, or a second build may start after the first has already let go of
its lock. So the build names the points such tests need, and the test asks the build itself to stop there:

- `CB2_CHECKPOINT=NAME:kill`: the process that reaches `checkpoint(NAME)` first SIGKILLs its whole process
  group there, as `kill -9` of the build would (tests start builds in a session of their own);
- `CB2_CHECKPOINT=NAME:hold:DIR`: it writes `DIR/NAME.reached` and waits until `DIR/NAME.go` exists (or
  `HOLD_LIMIT_S` pass, so an abandoned build does not wait forever), then goes on.

Several may be given, separated by `,`. Unset (every real run), a checkpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "CB2_CHECKPOINT"
HOLD_LIMIT_S = 600.0
POLL_S = 0.01


def _actions() -> dict[str, list[str]]:
    spec = os.environ.get(ENV, "")
    out: dict[str, list[str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, rest = item.partition(":")
        out[name] = rest.split(":", 1)
    return out


def checkpoint(name: str) -> None:
    """Do what CB2_CHECKPOINT asks at `name` (nothing when it names no action for it)."""
    if ENV not in os.environ:
        return
    action = _actions().get(name)
    if not action:
        return
    if action[0] == "kill":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    elif action[0] == "hold" and len(action) == 2:
        folder = Path(action[1])
        (folder / f"{name}.reached").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not (folder / f"{name}.go").exists() and time.monotonic() < deadline:
            time.sleep(POLL_S)
    else:
        raise ValueError(f"{ENV}: cannot read {name}:{':'.join(action)} (NAME:kill or NAME:hold:DIR)")
