"""The shard stage: the release from the render parts and splits of every species built in the work dir.

Its scope is the release, not one species (pipeline.context.ReleaseContext): its graph is fed by every species'
graph (`release_graph`) and its one unit consumes their render and split, fingerprinted by every species'
`shard_bytes` and `max_missing_fraction` (the card states it), the release dir and the digests of every species'
render parts and split; the runner seals it as any other (its marker: `work/release/shard/part-00000.done`,
recording the release's files where they are). Every species with a bank in the work dir goes in: if one is not
rendered and split under its current config, the stage refuses and names it (a release never silently omits a
species).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq

from core.errors import UserError
from core.hashing import md5_hex
from core.layout import MARKER
from pipeline import __version__
from pipeline.context import BuildContext, ReleaseContext, make_context
from pipeline.graph import StageGraph
from pipeline.markers import corrupt_outputs, outputs_digest, read_marker
from pipeline.reuse import PriorRun
from pipeline.runner import amend, fingerprint
from pipeline.stage import Outcome, Partition, StageBase, is_done
from pipeline.stages.render import STAGE as RENDER
from pipeline.stages.species import species_graph
from pipeline.stages.split import STAGE as SPLIT

STAGE = "shard"
RELEASE_FILES = ("shards.csv", "README.md", "report/index.html")


def species_in(work: Path) -> list[str]:
    """Species whose bank has been built in the work dir: the ones a release includes."""
    if not Path(work).exists():
        return []
    return sorted(p.name for p in Path(work).iterdir() if (p / "bank.parquet").exists())


class ShardStage(StageBase):
    """The release's stage: one unit over every species built in the work dir."""

    name = STAGE
    reads = ("shard_bytes", "max_missing_fraction")  # of every species; the card states each max_missing_fraction
    consumes = (RENDER, SPLIT)  # of every species feeding its graph
    unit = "rows"  # the rows of every species' render parts: what the release ships

    def partitions(self, ctx: ReleaseContext, graph: StageGraph) -> list[Partition]:
        """The release's one unit: its members are every species' render parts (relative to the work dir), its
        fingerprint covers what they and the splits wrote, every species' `reads` and where it goes."""
        inputs, members, n_rows = [], [], 0
        for species, fed in sorted(graph.feeds.items()):
            for name in self.consumes:
                inputs += [f"{species}:{name}:{outputs_digest(read_marker(p.marker_path(fed.ctx)))}"
                           for p in fed.partitions(name)]  # fmt: skip
            for part in fed.partitions(RENDER):
                out = part.output_file(fed.ctx)
                members.append(str(out.relative_to(ctx.work_dir)))
                n_rows += pq.read_metadata(out).num_rows if is_done(fed.ctx, part) else 0
        fp = fingerprint(ctx, self, str(ctx.out_dir), *inputs)
        return [Partition(STAGE, 0, n_rows, fp, members=tuple(members))]

    def not_ready(self, ctx: ReleaseContext, behind: list[str]) -> str:
        work = ctx.work_dir
        if not behind:
            return f"no species in {work} has a bank yet: run `make build` first"
        first = behind[0].split(" ")[0]
        return (
            f"every species with a bank in {work} goes into the release, and {', '.join(behind)} is not ready: run "
            f"`make build SPECIES={first}`, or remove {work / first} to leave it out"
        )

    def run(self, ctx: ReleaseContext, part: Partition, prior: PriorRun | None) -> Outcome:
        """Check every render part's bytes, write the release beside `out` and swap it in whole."""
        from shard.release import write_release

        contexts = {c.species: c for c in ctx.contexts}
        parts: dict[str, list[Path]] = {sp: [] for sp in contexts}
        for member in part.members:
            parts[Path(member).parts[0]].append(ctx.work_dir / member)
        # each render part's marker beside it: its bytes against the sha256 it records
        check_render_parts(ctx.work_dir, [p.with_suffix(MARKER) for sp in sorted(parts) for p in parts[sp]])
        summary = write_release(
            species_parts=parts,
            splits={sp: c.split_path for sp, c in contexts.items()},
            split_manifests={sp: c.manifest_path for sp, c in contexts.items()},
            failures=[c.ledger_path for c in contexts.values() if c.ledger_path.exists()],
            out_dir=ctx.out_dir,
            shard_bytes=min(ctx.config(("shard_bytes",))["shard_bytes"].values()),  # one target: the smallest
            configs={sp: c.cfg for sp, c in contexts.items()},
            build_info=build_info(list(contexts.values())),
        )
        return Outcome(built=summary["total_rows"], outputs=[ctx.out_dir / name for name in RELEASE_FILES])


SHARD = ShardStage()


def release_graph(work: Path, out: Path, graphs: dict[str, StageGraph] | None = None) -> StageGraph:
    """The release's graph, fed by the graph of every species with a bank in `work` (`graphs`: the ones a command
    has listed already, reused)."""
    graphs = dict(graphs or {})
    feeds = {sp: graphs.get(sp) or species_graph(make_context(sp, work, out)) for sp in species_in(work)}
    ctx = ReleaseContext(Path(work).resolve(), Path(out).resolve(), tuple(g.ctx for g in feeds.values()))
    return StageGraph(ctx, {STAGE: SHARD}, feeds)


def build_info(contexts: list[BuildContext]) -> dict:
    """What the report says built the release: the code version, each species' config digest and source, and
    per stage the partitions, their summed seconds and when the last finished (from the markers)."""
    species = {}
    for ctx in contexts:
        stages = {}
        for stage in ("bank", "fetch", "render"):
            markers = [m for m in (read_marker(p) for p in sorted(ctx.stage_dir(stage).glob(f"part-*{MARKER}"))) if m]
            if markers:
                last = max(m.get("finished_unix", 0) for m in markers)
                stages[stage] = {
                    "partitions": len(markers),
                    "seconds": sum(m.get("seconds", 0.0) for m in markers),
                    "finished": dt.datetime.fromtimestamp(last, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                    if last else "?",
                }
        species[ctx.species] = {
            "config_digest": md5_hex(ctx.cfg.model_dump_json())[:12],
            "source": ctx.cfg.source,
            "stages": stages,
        }
    return {"code_version": __version__, "species": species}


def check_render_parts(work_dir: Path, markers: list[Path]) -> None:
    """Every render part must hash as its marker says; a corrupt one loses its marker, to be redone."""
    for marker in markers:
        bad = corrupt_outputs(work_dir, marker)
        if bad:
            marker.unlink(missing_ok=True)
            species = marker.relative_to(work_dir).parts[0]
            raise UserError(
                f"species {species}: render part {bad[0]} does not match the sha256 in its marker "
                f"(corrupted on disk); its marker was removed: rerun `make build SPECIES={species}` "
                "to render that partition again"
            )


def rewrite_report_of(work: Path, out: Path) -> Path:
    """`python -m pipeline report`: the report of the release in `out` again, from it and the work dir that built
    it (ledgers, markers, configs), without rewriting a shard."""
    from shard.release import ReleaseError, rewrite_report

    contexts = [make_context(sp, work, out) for sp in species_in(work)]
    try:
        index = rewrite_report(
            Path(out),
            failures=[c.ledger_path for c in contexts if c.ledger_path.exists()],
            configs={c.species: c.cfg for c in contexts},
            build_info=build_info(contexts),
        )
    except ReleaseError as exc:
        raise UserError(str(exc)) from None
    # the release's marker records the report it wrote: record this one, or the next build, finding the report
    # changed, would write the whole release again (every shard) over a page
    ctx = ReleaseContext(Path(work).resolve(), Path(out).resolve(), tuple(contexts))
    marker = Partition(STAGE, 0, 0, "").marker_path(ctx)
    if str(Path(index).resolve()) in (read_marker(marker) or {}).get("outputs", {}):
        amend(ctx, marker, add=[Path(index).resolve()])
    return index
