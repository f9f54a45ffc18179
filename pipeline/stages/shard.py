"""The shard stage: the release from the render parts and splits of every species built in the work dir.

Its scope is the release, not one species: one partition whose fingerprint covers `shard_bytes` and the digests
of every species' render parts and split. Every species with a bank in the work dir goes in: if one is not
rendered and split under its current config, the stage refuses and names it (a release never silently omits a
species). Its marker is `work/release.done`; it records the release files' sizes, relative to the release dir.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.hashing import key_of, md5_hex
from core.layout import MARKER
from pipeline import __version__
from pipeline.context import BuildContext, make_context, release_marker_path
from pipeline.graph import StageGraph
from pipeline.markers import corrupt_outputs, outputs_digest, read_marker, write_marker
from pipeline.runner import Partition, StageDeclarations
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


@dataclass
class ReleaseInputs:
    contexts: list[BuildContext]
    fingerprint: str
    problem: str | None  # why the release cannot be written yet (one line), or None
    graphs: dict[str, StageGraph]  # each species' stage graph, as listed for the fingerprint


class ShardStage(StageDeclarations):
    """The release's stage: one partition over every species (`inputs`, `is_done`, `run`), not a species'."""

    name = STAGE
    reads = ("shard_bytes", "max_missing_fraction")  # the card states each species' max_missing_fraction
    consumes = (RENDER, SPLIT)

    def inputs(self, work: Path, out: Path, graphs: dict[str, StageGraph] | None = None) -> ReleaseInputs:
        """What the release is made of: every species with a bank in `work`, listed through its stage graph
        (`graphs`: the ones a build has already listed, reused)."""
        graphs = dict(graphs or {})
        contexts = []
        for sp in species_in(work):
            if sp not in graphs:
                graphs[sp] = species_graph(make_context(sp, work, out))
            contexts.append(graphs[sp].ctx)
        if not contexts:
            return ReleaseInputs([], "", f"no species in {work} has a bank yet: run `make build` first", graphs)
        inputs, problems = [], []
        for ctx in contexts:
            graph = graphs[ctx.species]
            for name in self.consumes:
                if graph.missing(name) or graph.incomplete(name):
                    problems.append(f"{ctx.species} ({name} not done)")
                    break
                inputs += [f"{ctx.species}:{name}:{outputs_digest(read_marker(p.marker_path(ctx)))}"
                           for p in graph.partitions(name)]  # fmt: skip
        card = [f"{c.species}:max_missing_fraction:{c.cfg.max_missing_fraction!r}" for c in contexts]
        fp = md5_hex(key_of(__version__, STAGE, shard_bytes(contexts), *card, *inputs))
        problem = None
        if problems:
            names = ", ".join(problems)
            first = problems[0].split(" ")[0]
            problem = (
                f"every species with a bank in {work} goes into the release, and {names} is not ready: run "
                f"`make build SPECIES={first}`, or remove {Path(work) / first} to leave it out"
            )
        return ReleaseInputs(contexts, fp, problem, graphs)

    def is_done(self, release: ReleaseInputs, work: Path, out: Path) -> bool:
        marker = read_marker(release_marker_path(work))
        if marker is None or release.problem or marker.get("fingerprint") != release.fingerprint:
            return False
        if marker.get("out_dir") != str(Path(out).resolve()):
            return False
        for name, size in marker.get("files", {}).items():
            path = Path(out) / name
            if not path.exists() or path.stat().st_size != size:
                return False
        return True

    def run(self, release: ReleaseInputs, work: Path, out: Path) -> dict:
        from shard.release import write_release

        if release.problem:
            raise UserError(release.problem)
        render_parts = {c.species: release.graphs[c.species].partitions(RENDER) for c in release.contexts}
        check_render_parts(release.contexts, render_parts)
        summary = write_release(
            species_parts={c.species: [p.output_file(c) for p in render_parts[c.species]] for c in release.contexts},
            splits={c.species: c.split_path for c in release.contexts},
            split_manifests={c.species: c.manifest_path for c in release.contexts},
            failures=[c.ledger_path for c in release.contexts if c.ledger_path.exists()],
            out_dir=Path(out),
            shard_bytes=shard_bytes(release.contexts),
            configs={c.species: c.cfg for c in release.contexts},
            build_info=build_info(release.contexts),
        )
        files = {name: (Path(out) / name).stat().st_size for name in RELEASE_FILES}
        species = [c.species for c in release.contexts]
        write_marker(release_marker_path(work), {"fingerprint": release.fingerprint, "species": species,
                                                 "out_dir": str(Path(out).resolve()), "files": files})  # fmt: skip
        return {"species": species, "summary": summary}


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


def shard_bytes(contexts: list[BuildContext]) -> int:
    """One shard byte target for the release: the smallest any included species asks for."""
    return min((c.cfg.shard_bytes for c in contexts), default=0)


def check_render_parts(contexts: list[BuildContext], parts: dict[str, list[Partition]]) -> None:
    """Every render part must hash as its marker says; a corrupt one loses its marker, to be redone."""
    for ctx in contexts:
        for part in parts[ctx.species]:
            bad = corrupt_outputs(ctx.work_dir, part.marker_path(ctx))
            if bad:
                part.marker_path(ctx).unlink(missing_ok=True)
                raise UserError(
                    f"species {ctx.species}: render part {bad[0]} does not match the sha256 in its marker "
                    f"(corrupted on disk); its marker was removed: rerun `make build SPECIES={ctx.species}` "
                    "to render that partition again"
                )


def rewrite_report_of(work: Path, out: Path) -> Path:
    """`python -m pipeline report`: the report of the release in `out` again, from it and the work dir that built
    it (ledgers, markers, configs), without rewriting a shard."""
    from shard.release import ReleaseError, rewrite_report

    contexts = [make_context(sp, work, out) for sp in species_in(work)]
    try:
        return rewrite_report(
            Path(out),
            failures=[c.ledger_path for c in contexts if c.ledger_path.exists()],
            configs={c.species: c.cfg for c in contexts},
            build_info=build_info(contexts),
        )
    except ReleaseError as exc:
        raise UserError(str(exc)) from None
