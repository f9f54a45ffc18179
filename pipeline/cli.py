"""`python -m pipeline`: the one interface; every make target is a thin wrapper over it."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import click

from config import known_species
from core.errors import UserError

SCHEDULER_HELP = "local dask scheduler (processes, threads, sync) or a dask.distributed address (tcp://host:port)"
SHOWN_IDS = 20  # sample ids listed per reason by `status --failed` (the ledger holds them all)


def _user_errors(fn: Callable) -> Callable:
    """A user's mistake or an unreachable server: one line on stderr, exit 1, no traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: finished partitions are kept; rerun to resume", err=True)
            sys.exit(130)

    return wrapper


def _common(fn: Callable) -> Callable:
    fn = click.option("--work", type=click.Path(path_type=Path), default=Path("work"), show_default=True,
                      help="work dir (per-species intermediate artifacts)")(fn)  # fmt: skip
    fn = click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
                      help="release dir")(fn)  # fmt: skip
    return fn


def _run_options(fn: Callable) -> Callable:
    fn = click.option("--scheduler", default=os.environ.get("SCHEDULER") or "processes", show_default=True,
                      help=SCHEDULER_HELP)(fn)  # fmt: skip
    fn = click.option("--workers", type=click.IntRange(min=1), default=None, help="worker processes (local)")(fn)
    fn = click.option("--force", is_flag=True, help="redo finished partitions")(fn)
    fn = click.option("--no-progress", is_flag=True, help="no progress bars")(fn)
    return fn


def _species_option(fn: Callable) -> Callable:
    return click.option(
        "--species",
        type=click.Choice(known_species()),
        default="demo",
        show_default=True,
        help="species config in config/<species>.yaml",
    )(fn)


def _opts(scheduler: str, workers: int | None, force: bool, no_progress: bool):  # noqa: ANN202
    from pipeline.build import RunOptions

    return RunOptions(scheduler=scheduler, workers=workers, force=force, progress=not no_progress)


def _outage(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, float] | None:
    """`N:S` -> (N, S): the twin's outage from its N-th request on, for S seconds."""
    if value is None:
        return None
    n, _, seconds = value.partition(":")
    try:
        got = (int(n), float(seconds))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not N:S (a request count and seconds, e.g. 200:30)") from None
    if got[0] < 1 or got[1] <= 0:
        raise click.BadParameter(f"{value!r}: N must be >= 1 and S > 0")
    return got


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """cb2-build: build the ConnectomeBench2 dataset (bank -> fetch -> render -> split -> shard -> verify)."""


@cli.command()
@_species_option
@_common
@_run_options
@click.option("--verify/--no-verify", default=True, show_default=True, help="verify the release at the end")
@click.option("--source", "source", type=click.Choice(["config", "twin"]), default="config", show_default=True,
              help="twin: build the demo species through CaveSource against a twin of the real services")  # fmt: skip
@click.option("--twin-flavor", type=click.Choice(["v1", "v2"]), default="v2", show_default=True,
              help="v1: FlyWire-like chunkedgraph and meshes; v2: MICrONS-like")  # fmt: skip
@click.option("--twin-world", type=click.Path(path_type=Path), default=Path("work/demo/world"), show_default=True,
              help="the demo world the twin serves (generated when missing)")  # fmt: skip
@click.option("--twin-port", type=click.IntRange(0, 65535), default=None, help="[18711 for v1, 18712 for v2]")
@click.option("--twin-latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--twin-drift", multiple=True, metavar="NAME", help="serve the twin drifted (repeatable)")
@click.option("--twin-hostile", type=int, default=None, metavar="SEED",
              help="the twin hides limits drawn from SEED and makes the real servers' faults (shown once the build "
                   "ends)")  # fmt: skip
@click.option("--twin-hostile-off", multiple=True, metavar="NAME",
              help="a hostile option turned off (repeatable; names: sim/twin/hostile.py HOSTILE_OPTIONS)")
@click.option("--twin-outage", callback=_outage, default=None, metavar="N:S",
              help="the twin refuses connections for S seconds from its N-th request on")  # fmt: skip
@_user_errors
def build(species, work, out, scheduler, workers, force, no_progress, verify, source, twin_flavor, twin_world,
          twin_port, twin_latency_ms, twin_drift, twin_hostile, twin_hostile_off, twin_outage) -> None:  # noqa: ANN001  # fmt: skip
    """Build SPECIES end to end and (re)write the release from every built species."""
    from pipeline.build import build as build_all

    start = time.perf_counter()
    opts = _opts(scheduler, workers, force, no_progress)
    if source == "twin":
        from pipeline.twin_build import TwinOptions, build_through_twin

        topts = TwinOptions(flavor=twin_flavor, world=twin_world, port=twin_port, latency_ms=twin_latency_ms,
                            drift=tuple(twin_drift), hostile=twin_hostile, hostile_off=tuple(twin_hostile_off),
                            outage=twin_outage)  # fmt: skip
        (summaries, result), asked = build_through_twin(species, work, out, opts, topts)
    else:
        from pipeline.context import make_context

        _ensure_world(make_context(species, work, out))
        summaries, result = build_all(species, work, out, opts, cave_token=_cave_token())
    for summary in summaries:
        click.echo(summary.line())
    click.echo(_release_line(result, out))
    if source == "twin":
        click.echo(
            f"twin ({twin_flavor}): {asked['requests']} requests, {asked['bytes'] / 1e6:.1f} MB sent, longest URL "
            f"{asked['longest_url']} bytes, {asked['refused']} refused by a limit, {asked['errors']} other errors"
        )
        from pipeline.twin_build import closing_lines

        for line in closing_lines(asked):
            click.echo(line)
    if verify:
        _verify(out, deep=False)
    click.echo(f"build of {species} finished in {time.perf_counter() - start:.1f} s")


def _cave_token() -> str | None:
    """CAVE_TOKEN of the process that starts the build, carried to every worker with the context: a worker of a
    dask.distributed cluster is another process (often another machine) that does not share this shell's
    environment. Unset: each worker's own lookup (its CAVE_TOKEN, or caveclient's secret file)."""
    from pipeline.sources.cave.errors import TOKEN_ENV

    return os.environ.get(TOKEN_ENV) or None


def _ensure_world(ctx) -> None:  # noqa: ANN001
    """The demo species' world, generated when missing: the commands that build it start the simulator."""
    from sim.demo_world import ensure_world

    ensure_world(ctx)


def _release_line(result: dict, out: Path) -> str:
    if result.get("skipped"):
        return f"shard: release in {out} is up to date ({', '.join(result['species'])})"
    return f"shard: wrote release to {out} from {', '.join(result['species'])}"


def _stage_names() -> list[str]:
    from pipeline.build import STAGE_NAMES

    return list(STAGE_NAMES)


@cli.command()
@click.argument("stage", type=click.Choice(_stage_names()))
@_species_option
@_common
@_run_options
@_user_errors
def stage(stage, species, work, out, scheduler, workers, force, no_progress) -> None:  # noqa: ANN001
    """Run one STAGE of SPECIES (shard: the release of every species); finished partitions are skipped unless
    --force. A stage whose upstream is not done refuses, naming it."""
    from pipeline.build import SHARD, run_species, write_release_all
    from pipeline.context import make_context
    from pipeline.stages.species import species_graph

    opts = _opts(scheduler, workers, force, no_progress)
    if stage == SHARD.name:
        click.echo(_release_line(write_release_all(work, out, opts), out))
        return
    ctx = make_context(species, work, out, _cave_token())
    _ensure_world(ctx)
    for summary in run_species(species_graph(ctx), opts, (stage,)):
        click.echo(summary.line())


@cli.command()
@_common
@_run_options
@_user_errors
def split(work, out, scheduler, workers, force, no_progress) -> None:  # noqa: ANN001
    """Regenerate the split of every built species where its inputs changed (or --force), then the release."""
    from pipeline.build import regenerate_splits

    done, result = regenerate_splits(work, out, _opts(scheduler, workers, force, no_progress))
    for species, summary in done:
        click.echo(f"{species} {summary.line()}")
    click.echo(_release_line(result, out))


def _verify(
    out: Path, deep: bool, scheduler: str = "processes", workers: int | None = None, progress: bool = False
) -> None:
    from shard.verify import verify_release

    report = verify_release(Path(out), deep=deep, scheduler=scheduler, workers=workers, progress=progress)
    click.echo(report.text())
    if not report.ok:
        raise UserError(f"verify failed for {out}: {report.problems[0]}" + (
            f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""))  # fmt: skip


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True, help="release dir")
@click.option("--deep", is_flag=True, help="also decode every row and check it against the contract")
@click.option("--scheduler", default=os.environ.get("SCHEDULER") or "processes", show_default=True,
              help="where --deep runs, one task per shard: " + SCHEDULER_HELP)  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="hashing threads and local --deep worker processes (default: one per core)")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="no progress bar")
@_user_errors
def verify(out, deep, scheduler, workers, no_progress) -> None:  # noqa: ANN001
    """Check every shard's sha256 and size against shards.csv; non-zero exit on any problem."""
    if not (Path(out) / "shards.csv").exists():
        raise UserError(f"no release at {out}: {Path(out) / 'shards.csv'} is missing (run `make build`)")
    _verify(out, deep, scheduler, workers, progress=deep and not no_progress)


@cli.command()
@_common
@click.option("--failed", is_flag=True, help="list the ledgered failures by stage and reason (with their sample ids "
              "and whether the next build retries them), and crashed partitions with their logs")
@_user_errors
def status(work, out, failed) -> None:  # noqa: ANN001
    """Per species and stage: partitions done / pending, what the done ones cover (the bank: proofread roots; fetch,
    render, split: bank rows), failures recorded; then the release (rows shipped)."""
    from pipeline.build import crashed, ledgered
    from pipeline.build import status as build_status

    rows = build_status(work, out)
    if not rows:
        click.echo(f"nothing built in {work} yet")
        return
    click.echo(f"{'species':<10} {'stage':<7} {'done':>6} {'pending':>8} {'covering':>8} {'':<10} {'failed':>7}")
    for r in rows:
        click.echo(
            f"{r['species']:<10} {r['stage']:<7} {r['partitions_done']:>6} {r['partitions_pending']:>8} "
            f"{r['covered']:>8} {r['unit']:<10} {r['failed']:>7}"
        )
    if failed:
        groups = ledgered(work, out)
        total = sum(len(g["samples"]) for g in groups)
        click.echo(f"{total} ledgered failures" + (" (by species, stage and reason):" if groups else ""))
        for g in groups:
            retried = "retried by the next build" if g["retried"] else "kept (the data's own reason)"
            click.echo(f"{g['species']} {g['stage']} {g['reason']}: {len(g['samples'])}, {retried}")
            shown = g["samples"][:SHOWN_IDS]
            more = f" and {len(g['samples']) - SHOWN_IDS} more" if len(g["samples"]) > SHOWN_IDS else ""
            click.echo(f"  {' '.join(shown)}{more}")
        logs = crashed(work, out)
        click.echo(f"{len(logs)} partitions with a crash log" + (":" if logs else ""))
        for c in logs:
            click.echo(f"{c['species']} {c['stage']} {c['partition']}: {c['what']}")
            if c["not_built"]:
                click.echo(f"  not built ({len(c['not_built'])}): {' '.join(c['not_built'])}")
            click.echo(f"  log: {c['log']}")


@cli.command("demo-world")
@click.option("--work", type=click.Path(path_type=Path), default=Path("work"), show_default=True)
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True)
@click.option("--force", is_flag=True, help="regenerate even if complete")
@_user_errors
def demo_world(work, size, force) -> None:  # noqa: ANN001
    """Generate the synthetic demo world into WORK/demo/world (CloudVolume file:// layers + tables)."""
    from pipeline.context import make_context
    from sim.demo_world import ensure_world

    ctx = make_context("demo", work, Path("out"))
    if size == "tiny":
        from sim.demo_world import generate_world

        summary = generate_world(ctx.world_dir, 3, 4, ctx.cfg.demo_world.seed)
    else:
        start = time.perf_counter()
        summary = ensure_world(ctx, force=force)
        click.echo(f"generated or found in {time.perf_counter() - start:.1f} s")
    for key, value in sorted(summary.items()):
        click.echo(f"{key}: {value}")


@cli.command()
@click.option("--work", type=click.Path(path_type=Path), default=Path("work"), show_default=True,
              help="work dir; the twin serves WORK/demo/world (generated if missing)")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8710, show_default=True, help="0: any free port")
@click.option("--flavor", type=click.Choice(["v1", "v2"]), default="v2", show_default=True,
              help="v1: FlyWire-like (unsharded, bounds ignored); v2: MICrONS-like (sharded, bounds)")  # fmt: skip
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="added to every request")  # fmt: skip
@click.option("--row-cap", type=click.IntRange(min=1), default=None, help="materialization row cap [50; real 200000]")
@click.option("--url-bytes", type=click.IntRange(min=256), default=None, help="longest URL before 414 [8192]")
@click.option("--change-log-roots", type=click.IntRange(min=1), default=None,
              help="most roots per change-log request before 504 [50]")  # fmt: skip
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None,
              help="request log (JSONL) [WORK/demo/twin-requests.jsonl]")  # fmt: skip
@click.option("--draco-bin-nm", type=click.FloatRange(min=0.5), default=None,
              help="Draco quantization step of the meshes [PyChunkedGraph's: 17 nm at 32 nm voxels]")  # fmt: skip
@click.option("--drift", "drift", multiple=True, metavar="NAME",
              help="serve a drifted state (repeatable; names: sim/twin/drift.py)")  # fmt: skip
@click.option("--replay", "replay", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="serve a recording (preflight --record DIR) instead of the demo world")  # fmt: skip
@click.option("--hostile", type=int, default=None, metavar="SEED",
              help="hide limits drawn from SEED, make the real servers' faults (shown when stopped)")  # fmt: skip
@click.option("--hostile-off", multiple=True, metavar="NAME",
              help="a hostile option turned off (repeatable; names: sim/twin/hostile.py HOSTILE_OPTIONS)")
@click.option("--outage", callback=_outage, default=None, metavar="N:S",
              help="refuse connections for S seconds from the N-th request on, then serve again")  # fmt: skip
@_user_errors
def twin(work, port, flavor, latency_ms, row_cap, url_bytes, change_log_roots, log_path, draco_bin_nm, drift,
         replay, hostile, hostile_off, outage) -> None:  # noqa: ANN001  # fmt: skip
    """Serve the demo world as CAVE + a graphene segmentation on 127.0.0.1 (the real clients talk to it)."""
    if replay is not None:
        from sim.twin.replay import run_replay_cli

        run_replay_cli(replay, port, click.echo)
        return
    from sim.twin.serve import run_twin_cli

    limits = {"row_cap": row_cap, "url_bytes": url_bytes, "change_log_roots": change_log_roots}
    run_twin_cli(work, port, flavor, latency_ms, limits, log_path, draco_bin_nm, click.echo, drift=drift,
                 hostile=hostile, hostile_off=tuple(hostile_off), outage=outage)  # fmt: skip


@cli.command()
@_species_option
@_common
@click.option("--workers", type=click.IntRange(min=1), default=32, show_default=True, help="workers to plan for")
@click.option("--sample-roots", type=click.IntRange(min=1), default=8, show_default=True,
              help="roots whose candidates are counted to estimate the rest (when the bank is not built)")  # fmt: skip
@click.option("--rows", type=click.IntRange(min=1), default=None,
              help="project the whole build of this many rows at the demo's cutout size, asking no source")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="the figures as one JSON object (for scripts), not the text")
@_user_errors
def plan(species, work, out, workers, sample_roots, rows, as_json) -> None:  # noqa: ANN001
    """What a build of SPECIES would make and cost (candidates per type, partitions, requests, bytes, hours of
    every stage, the disk of the release and of the work dir with and without keeping fetched files), asking the
    sources only for the proofread roots, a few roots' candidates and the volumes' info; never fetches or renders.
    Says which figures are measured and which are estimates. With --rows: the projection of that many rows alone."""
    from pipeline.context import make_context
    from pipeline.plan import make_plan, project
    from sim.demo_world import ensure_world

    ctx = make_context(species, work, out)
    if rows is not None:
        click.echo(project(rows, workers, ctx.cfg.fetch_threads, ctx.cfg.partition_rows,
                           ctx.cfg.cave_requests.max_in_flight_per_host))  # fmt: skip
        return
    ensure_world(ctx)
    made = make_plan(ctx, workers, sample_roots)
    click.echo(json.dumps(made.figures(), sort_keys=True) if as_json else made.text())


@cli.command()
@_species_option
@_common
@click.option("--record", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="write every request and answer to this directory (never the token or cookies)")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=32, show_default=True,
              help="workers of the planned build (the version's expiry is set against its duration)")  # fmt: skip
@click.option("--source", "source", type=click.Choice(["config", "twin"]), default="config", show_default=True,
              help="twin: check a twin of the real services (started here) with the demo species")  # fmt: skip
@click.option("--twin-flavor", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
@click.option("--twin-world", type=click.Path(path_type=Path), default=Path("work/demo/world"), show_default=True)
@click.option("--twin-port", type=click.IntRange(0, 65535), default=None, help="[18711 for v1, 18712 for v2]")
@click.option("--twin-drift", multiple=True, metavar="NAME", help="serve the twin drifted (repeatable)")
@click.option("--twin-hostile", type=int, default=None, metavar="SEED", help="the twin hides limits drawn from SEED")
@click.option("--twin-hostile-off", multiple=True, metavar="NAME", help="a hostile option turned off (repeatable)")
@_user_errors
def preflight(species, work, out, record, workers, source, twin_flavor, twin_world, twin_port, twin_drift,
              twin_hostile, twin_hostile_off) -> None:  # noqa: ANN001  # fmt: skip
    """Check, in a few minutes and a few hundred requests, every assumption a build of SPECIES makes about its
    servers: one line per check (ok / warn / FAIL with the config key or action), a JSON report in
    WORK/<species>/preflight.json; exit 1 when a check FAILed."""
    from pipeline.preflight import report_path
    from pipeline.twin_build import TwinOptions, preflight_species

    topts = TwinOptions(flavor=twin_flavor, world=twin_world, port=twin_port, drift=tuple(twin_drift),
                        hostile=twin_hostile, hostile_off=tuple(twin_hostile_off))  # fmt: skip
    ctx, report = preflight_species(species, work, out, record, workers, topts if source == "twin" else None,
                                    click.echo)  # fmt: skip
    click.echo(f"report: {report_path(ctx)}" + (f"; recording: {record}" if record else ""))
    if not report.ok:
        names = ", ".join(c.name for c in report.failed())
        raise UserError(f"preflight of {species} FAILED: {names} (see the lines above)")


@cli.command()
@click.argument("release_a", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("release_b", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--iou", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="least silhouette IoU per geometry view")  # fmt: skip
@_user_errors
def compare(release_a, release_b, iou) -> None:  # noqa: ANN001
    """Compare two releases row by row: samples, labels, splits, metadata, EM views identical; geometry
    silhouettes within IoU (a build through the twin gets Draco-quantized meshes). Non-zero exit if not."""
    from shard.compare import compare_releases

    c = compare_releases(release_a, release_b)
    click.echo(c.text(iou))
    if not c.ok(iou):
        worst = ", ".join(f"{h[:12]} view {v}: {i:.4f}" for i, h, v in c.below(iou)[:3])
        raise UserError(f"{release_a} and {release_b} differ" + (f" (lowest IoU: {worst})" if worst else ""))


@cli.command()
@_species_option
@_common
@click.option("--per-type", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=Path("preview.png"), show_default=True)
@_user_errors
def preview(species, work, out, per_type, output) -> None:  # noqa: ANN001
    """Write a contact sheet of rendered samples of every type (geometry channels, EM views, masks)."""
    from pipeline.preview import write_preview

    path = write_preview(species, work, out, per_type, output)
    click.echo(f"wrote {path}")


@cli.command()
@_common
@_user_errors
def report(work, out) -> None:  # noqa: ANN001
    """Write OUT/report/index.html again from the release in OUT and the work dir that built it (the shard stage
    writes it with every release): counts, a gallery of rows, failures, the build. Rewrites no shard."""
    import time

    from pipeline.stages.shard import rewrite_report_of

    start = time.perf_counter()
    index = rewrite_report_of(work, out)
    files = [p for p in index.parent.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    click.echo(f"report: {index} ({len(files)} files, {size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")


@cli.command()
@click.argument("combined_sample_hash")
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True, help="release dir")
@click.option("--png", type=click.Path(path_type=Path), default=None,
              help="picture of the row (default: <hash>.png in the current directory)")  # fmt: skip
@click.option("--neuroglancer", "serve", is_flag=True,
              help="demo species: serve its world's layers and a Neuroglancer client on 127.0.0.1 until Ctrl-C")
@click.option("--work", type=click.Path(path_type=Path), default=Path("work"), show_default=True,
              help="work dir holding the demo world (for --neuroglancer)")  # fmt: skip
@click.option("--port", type=click.IntRange(min=0), default=0, help="port for --neuroglancer (0: a free one)")
@_user_errors
def show(combined_sample_hash, out, png, serve, work, port) -> None:  # noqa: ANN001
    """Print one row's labels and metadata, write a labelled picture of it, and a Neuroglancer link at its
    point and time: the species' own layers for a real species; with --neuroglancer, a local viewer on the demo
    world's layers."""
    import json

    from config import load_config
    from core.atomic import atomic_path
    from pipeline.show import describe
    from render.contact_sheet import sample_sheet
    from shard.lookup import find_row
    from shard.neuroglancer import neuroglancer_state, neuroglancer_url

    found = find_row(Path(out), combined_sample_hash.strip().lower())
    click.echo(describe(found))
    side = found.sidecar
    title = f"{side['combined_sample_hash']}  {side['sample_type']}  {side['species']}  {side['split']}"
    png = png or Path(f"{side['combined_sample_hash']}.png")
    with atomic_path(png) as tmp:
        sample_sheet(found.row, title).save(tmp, format="PNG")
    click.echo(f"picture: {png}")
    if side["species"] not in known_species():
        click.echo(f"neuroglancer: no config for species {side['species']}")
        return
    cfg = load_config(side["species"])
    meta = json.loads(side["metadata"])
    if cfg.source == "cave":
        click.echo(f"neuroglancer: {neuroglancer_url(neuroglancer_state(cfg, side['sample_type'], meta))}")
    elif not serve:
        click.echo(f"neuroglancer: add --neuroglancer to view it locally ({side['species']} has no public layers)")
    else:
        from pipeline.context import BuildContext
        from pipeline.viewer import demo_state, open_viewer, serve_layers

        world = BuildContext(side["species"], cfg, Path(work).resolve(), Path(out)).world_dir
        with serve_layers(world) as layers:
            state = demo_state(cfg, world, layers, side["sample_type"], meta)
            click.echo(f"layers: {layers}")
            click.echo(f"state: {json.dumps(state, separators=(',', ':'))}")
            click.echo(f"neuroglancer: {open_viewer(state, port)}", err=False)
            click.echo("serving the demo world's layers and the viewer until Ctrl-C", err=True)
            threading.Event().wait()


def main() -> None:
    cli(prog_name="python -m pipeline")
