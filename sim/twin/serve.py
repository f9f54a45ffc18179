"""`python -m pipeline twin`: run the twin in the foreground until SIGINT / SIGTERM."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError
from sim.twin.hostile import HOSTILE_OPTIONS
from sim.twin.info import DATASTACK, TABLE_ID
from sim.twin.limits import TwinLimits
from sim.twin.server import TwinServer


def run_twin_cli(
    work: Path,
    port: int,
    flavor: str,
    latency_ms: float,
    changes: dict[str, int | None],
    log_path: Path | None,
    draco_bin_nm: float | None,
    echo: Callable[[str], None],
    drift: tuple[str, ...] = (),
    hostile: int | None = None,
    hostile_off: tuple[str, ...] = (),
    outage: tuple[int, float] | None = None,
) -> None:
    from pipeline.context import make_context
    from sim.demo_world import ensure_world
    from sim.twin.drift import parse_drifts

    try:
        drift = tuple(sorted(parse_drifts(drift)))
    except ValueError as exc:
        raise UserError(f"--drift: {exc}") from None
    ctx = make_context("demo", Path(work), Path("out"))
    ensure_world(ctx)
    limits = dataclasses.replace(TwinLimits(latency_ms=latency_ms), **{k: v for k, v in changes.items() if v})
    log_path = Path(log_path) if log_path else ctx.twin_requests_path
    try:
        server = TwinServer(
            ctx.world_dir, flavor=flavor, port=port, limits=limits, log_path=log_path, draco_bin_nm=draco_bin_nm,
            drift=drift, hostile_seed=hostile, hostile_off=hostile_off, outage=outage,
        )  # fmt: skip
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"cannot serve the twin on 127.0.0.1:{port} ({reason}); pick another --port") from None
    except ValueError as exc:  # an unknown hostile option
        raise UserError(f"--hostile-off: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    echo(f"twin ({flavor}) of {ctx.world_dir} at {server.url}")
    echo(f"  datastack {DATASTACK} (server_address {server.url}), token {server.token} (CAVE_TOKEN)")
    echo(f"  segmentation graphene://{server.url}/segmentation/table/{TABLE_ID}, EM precomputed://{server.url}/em")
    if hostile is None:
        echo(f"  limits: {limits.describe()}; Draco bin {server.cache_summary['draco_bin_nm']:g} nm")
    else:  # the point is that the client cannot know them: shown only when the twin stops
        on = ", ".join(o for o in HOSTILE_OPTIONS if server.app.hostility.on(o)) or "none"
        echo(f"  hostile (seed {hostile}): limits hidden, options on: {on}")
    if outage is not None:
        echo(f"  outage: from request {outage[0]} on, connections refused for {outage[1]:g} s")
    echo(f"  drift: {server.app.drift.describe()}")
    echo(f"  request log: {log_path}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        echo(f"twin stopped after {len(server.log)} requests")
        if server.app.hostility is not None:
            hostility = server.app.hostility
            echo("  it did: " + ", ".join(f"{k} {v}" for k, v in hostility.met.items()))
            echo("  hidden limits: " + ", ".join(f"{k} {v}" for k, v in hostility.describe().items()))
            if hostility.items:
                echo("  failing items: " + ", ".join(f"{k} {v}" for k, v in hostility.items.items()))
