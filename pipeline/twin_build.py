"""`make build SOURCE=twin`: the demo species built through CaveSource against a twin this command starts.

The twin serves a demo world (by default `work/demo/world`, the one `make build` uses) as the real services
serve theirs, with their limits on; the species config is the demo's (the config dir's: CB2_CONFIG_DIR or config/,
or `TwinOptions.config_dir`) with its source swapped for the twin's endpoints and pinned to its time
(sim.twin.species), written to `WORK/.twin/config/demo.yaml`: the work dir's own config, read by
every command on that work dir (pipeline.context.make_context), so status and verify of it read it too. The
twin's token travels with the build's context (`BuildContext.cave_token`) to every worker: nothing is set in this
process's environment. The twin listens on a fixed port
per flavour, because the endpoints are inputs of the stages' fingerprints: a rerun on the same port resumes.

`hostile=SEED`: the twin hides limits drawn from the seed (sim/twin/hostile.py) and the client's config gets
short read timeouts (hostile.CLIENT_FIRST_TIMEOUT_S, so that the drawn slow answers cost seconds, not minutes).
Nothing of the hidden limits is printed until the build has ended; then `closing_lines` says what the clients met
(refused, 429s, resets, timeouts, bisections), what they learned (each endpoint's final batch size, gathered from
the worker processes through the partitions' results) and the hidden limits beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from config import SpeciesConfig, load_config
from config.schema import default_config_dir
from core.errors import UserError
from core.layout import twin_config_dir

TWIN_PORTS = {"v1": 18711, "v2": 18712}
# The twin's Draco step for builds: PyChunkedGraph's own formula gives 17 nm for the demo's 32 nm voxels, which
# moves the silhouettes of the demo's thin neurites by more than the 0.98 IoU the release comparison allows
# (min 0.961 measured); at 8 nm every view stays above it (min 0.988). The quantization itself is the real one.
BUILD_DRACO_BIN_NM = 8.0


@dataclass(frozen=True)
class TwinOptions:
    flavor: str = "v2"
    world: Path | None = None  # default: <work>/../demo/world of the default work dir
    port: int | None = None
    latency_ms: float = 0.0
    draco_bin_nm: float = BUILD_DRACO_BIN_NM
    drift: tuple[str, ...] = ()  # sim/twin/drift.py switches (preflight's drill)
    hostile: int | None = None  # a seed: the twin hides limits drawn from it and makes the real servers' faults
    hostile_off: tuple[str, ...] = ()  # hostile options turned off (sim/twin/hostile.py HOSTILE_OPTIONS)
    outage: tuple[int, float] | None = None  # (n, s): the twin refuses connections for s seconds from request n on
    # the folder of the demo config whose windows, budgets and time the twin build takes (None: CB2_CONFIG_DIR, else
    # the shipped config/): a user's own demo config (another as_of pins the twin to that time) reaches the build
    config_dir: Path | None = None


def demo_config(opts: TwinOptions) -> SpeciesConfig:
    """The demo config a build through the twin starts from: `opts.config_dir`'s, else the config dir's
    (CB2_CONFIG_DIR, or config/), as every other command reads it."""
    return load_config("demo", opts.config_dir or default_config_dir())


def _demo_world(opts: TwinOptions) -> Path:
    from pipeline.context import BuildContext
    from sim.demo_world import ensure_world

    world = Path(opts.world or Path("work") / "demo" / "world").resolve()
    demo = demo_config(opts)
    # the world lives in a demo species dir of its own: generate it there when missing
    ensure_world(BuildContext("demo", demo, world.parent.parent, Path("out")))
    return world


@contextmanager
def twin_environment(species: str, work: Path, opts: TwinOptions) -> Iterator:
    """A running twin serving the demo world, with its species config written to `WORK/.twin/config/demo.yaml`
    (the work dir's own config from then on); stopped after. A hostile twin's config gives the client short read
    timeouts (so that its slow tail and its overload meet them), the rate limits' window as the wait after a rate
    limit that names none (the engine's answer names its window, "N per W second"), an outage deadline of 120 s
    (a build meets a host down for 30 s: the `outage` option) and lets 5% of the samples fail (the items that
    fail every time)."""
    from config.schema import CaveRequests
    from sim.twin.hostile import CLIENT_FIRST_TIMEOUT_S
    from sim.twin.limits import TwinLimits
    from sim.twin.server import TwinServer
    from sim.twin.species import twin_config

    if species != "demo":
        raise UserError(f"--source twin builds the demo species (the twin serves the demo world), not {species!r}")
    world = _demo_world(opts)
    port = TWIN_PORTS[opts.flavor] if opts.port is None else opts.port
    try:
        server = TwinServer(world, flavor=opts.flavor, port=port, limits=TwinLimits(latency_ms=opts.latency_ms),
                            draco_bin_nm=opts.draco_bin_nm, drift=opts.drift, hostile_seed=opts.hostile,
                            hostile_off=opts.hostile_off, outage=opts.outage)  # fmt: skip
    except OSError as exc:
        raise UserError(f"cannot serve the twin on 127.0.0.1:{port} ({exc.strerror or exc}); set TWIN_PORT") from None
    except ValueError as exc:  # an unknown drift or hostile option
        raise UserError(f"TWIN_DRIFT / TWIN_HOSTILE_OFF: {exc}") from None
    server.start()
    config_dir = twin_config_dir(work)
    config_dir.mkdir(parents=True, exist_ok=True)
    hostile: dict = {}
    if server.app.hostility is not None:
        requests = CaveRequests(read_timeout_s={"default": CLIENT_FIRST_TIMEOUT_S}, outage_deadline_s=120.0,
                                rate_limit_wait_s=float(server.app.hostility.limits.rate_window_s))  # fmt: skip
        hostile = {"cave_requests": requests}
    demo = demo_config(opts)
    if server.app.hostility is not None:  # the drawn item faults are a few roots whatever the world's size
        hostile["max_failed_fraction"] = max(0.05, demo.max_failed_fraction)
    cfg = twin_config(demo, server.url, opts.flavor, **hostile)
    (config_dir / "demo.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
    try:
        yield server
    finally:
        server.stop()


def build_through_twin(species: str, work: Path, out: Path, run_opts, opts: TwinOptions) -> tuple:  # noqa: ANN001
    """Serve the world, build `species` (demo) through CaveSource against it, stop the twin. Returns the build's
    (summaries, release result) and what its requests asked, met and learned (and a hostile twin's limits)."""
    from core.stats import merge_stats
    from pipeline.build import build
    from pipeline.sources.adaptive import take_counters
    from pipeline.sources.budget import last_stats

    with twin_environment(species, work, opts) as server:
        take_counters()  # this process's figures from before the build are not the build's
        summaries, result = build(species, work, out, run_opts, cave_token=server.token)
        asked = requests_summary(server.log.records())
        learned = take_counters()  # this process's requests no unit of work reported (none, as it is built)
        for summary in summaries:  # what every worker met, each unit's stats merged into its stage's summary
            learned = merge_stats(learned, summary.stats.get("requests", {}))
        asked["learned"] = learned
        asked["budget"] = last_stats()  # what the build's one budget per host did (in flight, paces, outages)
        hostility = server.app.hostility
        if hostility is not None:
            asked["met"] = dict(hostility.met)
            asked["hidden"] = hostility.limits.describe(opts.flavor)
            asked["items"] = dict(hostility.items) if hostility.on("item_faults") else {}
        return (summaries, result), asked


def preflight_species(species: str, work: Path, out: Path, record: Path | None, workers: int,
                      twin: TwinOptions | None, echo) -> tuple:  # noqa: ANN001  # fmt: skip
    """`preflight` of `species` against its own servers, or (twin options given) of the demo species against a
    twin this starts. Returns (context, report)."""
    from pipeline.context import make_context
    from pipeline.preflight import run_preflight

    if twin is None:
        ctx = make_context(species, work, out)
        return ctx, run_preflight(ctx, record, workers, echo=echo)
    with twin_environment(species, work, twin) as server:
        ctx = make_context(species, work, out, cave_token=server.token)
        return ctx, run_preflight(ctx, record, workers, echo=echo)


def requests_summary(records: list) -> dict:
    """What the clients asked of the twin: requests (in all and per endpoint), bytes, the longest URL, and answers a
    limit refused."""
    from collections import Counter

    from pipeline.sources.transport import endpoint_of

    return {
        "requests": len(records),
        "by_endpoint": dict(sorted(Counter(endpoint_of(r.path) for r in records).items())),
        "bytes": sum(r.bytes_sent for r in records),
        "longest_url": max((r.url_bytes for r in records), default=0),
        "refused": sum(r.status in (414, 504) for r in records),
        "errors": sum(r.status >= 400 and r.status not in (404, 414, 504) for r in records),
    }


def closing_lines(asked: dict) -> list[str]:
    """What the build's requests met and learned, then (hostile twin) the limits it was not told."""
    learned = asked.get("learned") or {}
    keys = ("refused", "server_errors", "rate_limited", "resets", "timeouts", "bisections", "unavailable", "slow")
    lines = [
        "requests met: {refused} refused, {server_errors} 500s (bisected to their item), {rate_limited} rate limits "
        "honoured, {resets} resets, {timeouts} timeouts, {bisections} bisections, {unavailable} items unavailable "
        "(ledgered), {slow} slow".format(**{k: learned.get(k, 0) for k in keys})
    ]
    for host, b in sorted((asked.get("budget") or {}).items()):
        paced = ", ".join(f"{ep} at {rate:g}/min" for ep, rate in b["per_minute"].items())
        lines.append(
            f"budget of {host} (the whole build): at most {b['most_in_flight']} requests in flight (allowed "
            f"{b['max_in_flight']}, lowered to {b['lowest_limit']} by {b['decreases']} halvings)"
            + (f"; paced {paced} after the server's rate limit" if paced else "")
            + (f"; {len(b['outages'])} outages waited out ({', '.join(f'{s:g} s' for s in b['outages'])})"
               if b["outages"] else "")
        )  # fmt: skip
    by_endpoint = asked.get("by_endpoint") or {}
    if by_endpoint:
        lines.append("requests per endpoint: " + ", ".join(f"{k} {v}" for k, v in by_endpoint.items()))
    sizes = learned.get("sizes") or {}
    if sizes:
        lines.append(
            "final batch size per endpoint (min-max over worker processes): "
            + ", ".join(f"{k} {min(v)}" + (f"-{max(v)}" if max(v) != min(v) else "") for k, v in sorted(sizes.items()))
        )
    if "met" in asked:
        lines.append("hostile twin did: " + ", ".join(f"{k} {v}" for k, v in asked["met"].items()))
        hidden = asked["hidden"]
        beside = {"change_log": "change_log", "l2cache": "l2cache"}
        shown = []
        for key, value in hidden.items():
            got = sizes.get(beside.get(key, ""), [])
            shown.append(f"{key} {value}" + (f" (learned {min(got)}-{max(got)})" if got else ""))
        lines.append("hidden limits: " + ", ".join(shown))
        if asked.get("items"):
            items = ", ".join(f"{k} {v}" for k, v in sorted(asked["items"].items()))
            lines.append(f"item faults (never answered): {items}")
    return lines


@contextmanager
def scale_twin(work: Path, params, latency_ms: float, hostile: int | None, port: int = 0,  # noqa: ANN001
               hostile_off: tuple[str, ...] = (), **overrides: object) -> Iterator[tuple]:  # fmt: skip
    """A twin serving a generated world at real scale (sim/twin/scale.py: the bank's inputs only) with the
    demo species' config pointed at it in `WORK/.twin/config/demo.yaml`. Yields (server, env): `env` is what a
    bank run in another process needs (CB2_CONFIG_DIR, CAVE_TOKEN), given to it explicitly, never set here."""
    from config.schema import CaveRequests
    from sim.twin.hostile import CLIENT_FIRST_TIMEOUT_S
    from sim.twin.limits import REAL_ROW_CAP, TwinLimits
    from sim.twin.scale import ScaleWorld
    from sim.twin.server import TOKEN, TwinServer
    from sim.twin.species import twin_config

    world = ScaleWorld(Path(work) / "scale-world", params)
    limits = TwinLimits(latency_ms=latency_ms, row_cap=REAL_ROW_CAP)
    server = TwinServer(world, flavor="v2", port=port, limits=limits, hostile_seed=hostile,
                        hostile_off=hostile_off).start()  # fmt: skip
    try:
        config_dir = twin_config_dir(work)
        config_dir.mkdir(parents=True, exist_ok=True)
        if hostile is not None:
            overrides.setdefault("cave_requests", CaveRequests(read_timeout_s={"default": CLIENT_FIRST_TIMEOUT_S}))
        demo = demo_config(TwinOptions())
        cfg = twin_config(demo, server.url, "v2", **overrides)
        (config_dir / "demo.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
        yield server, {"CB2_CONFIG_DIR": str(config_dir), "CAVE_TOKEN": TOKEN}
    finally:
        server.stop()
