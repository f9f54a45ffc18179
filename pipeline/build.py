"""Orchestration: which stages run for a species, the release of every built species, status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from config import load_config
from pipeline.atomic import write_json
from pipeline.context import BuildContext
from pipeline.errors import UserError
from pipeline.hashing import key_of, md5_hex, sha256_file
from pipeline.runner import Stage, StageSummary, corrupt_outputs, is_done, read_marker, run_stage
from pipeline.stages.bank import BankStage
from pipeline.stages.fetch import FetchStage
from pipeline.stages.render import RenderStage
from pipeline.stages.split import SplitStage, split_path

SPECIES_STAGES: dict[str, Stage] = {
    "bank": BankStage(),
    "fetch": FetchStage(),
    "render": RenderStage(),
    "split": SplitStage(),
}
ALL_STAGES = (*SPECIES_STAGES, "shard")
RELEASE_MARKER = "release.done"


@dataclass(frozen=True)
class RunOptions:
    scheduler: str = "processes"
    workers: int | None = None
    force: bool = False
    progress: bool = True


def make_context(species: str, work: Path, out: Path) -> BuildContext:
    return BuildContext(species, load_config(species), Path(work).resolve(), Path(out).resolve())


def ensure_world(ctx: BuildContext, force: bool = False) -> dict | None:
    """Generate the demo world when it is missing (demo species only)."""
    if ctx.cfg.source != "demo":
        return None
    from pipeline.demo_world import generate_world, world_is_complete

    if world_is_complete(ctx.world_dir) and not force:
        return json.loads((ctx.world_dir / "world.json").read_text())
    params = ctx.cfg.demo_world
    return generate_world(ctx.world_dir, params.n_sites, params.neurons_per_site, params.seed)


def run_species(ctx: BuildContext, opts: RunOptions, stages: tuple[str, ...] = tuple(SPECIES_STAGES)) -> list:
    ensure_world(ctx)
    summaries: list[StageSummary] = []
    for name in stages:
        kw = {"scheduler": opts.scheduler, "workers": opts.workers, "force": opts.force, "progress": opts.progress}
        summaries.append(run_stage(SPECIES_STAGES[name], ctx, **kw))
    return summaries


def species_in(work: Path) -> list[str]:
    """Species with a bank in the work dir: the ones a release or `split` may include."""
    if not Path(work).exists():
        return []
    return sorted(p.name for p in Path(work).iterdir() if (p / "bank.parquet").exists())


def species_ready(ctx: BuildContext) -> bool:
    """Rendered and split under the current plan: the release may include it."""
    if not ctx.bank_path.exists():
        return False
    return all(is_done(ctx, p) for name in ("render", "split") for p in SPECIES_STAGES[name].plan(ctx))


def _check_render_parts(contexts: list[BuildContext]) -> None:
    """Every render part must hash as its marker says; a corrupt one loses its marker, to be redone."""
    for ctx in contexts:
        for part in SPECIES_STAGES["render"].plan(ctx):
            bad = corrupt_outputs(ctx, part)
            if bad:
                part.marker_path(ctx).unlink(missing_ok=True)
                raise UserError(
                    f"species {ctx.species}: render part {bad[0]} does not match the sha256 in its marker "
                    f"(corrupted on disk); its marker was removed: rerun `make build SPECIES={ctx.species}` "
                    "to render that partition again"
                )


def write_release_all(work: Path, out: Path, opts: RunOptions) -> dict:
    """The release from the render parts of every built species (CONTRACT.md section 6)."""
    from shard.release import write_release

    contexts = [make_context(sp, work, out) for sp in species_in(work)]
    ready = [c for c in contexts if species_ready(c)]
    if not ready:
        raise UserError(f"no species in {work} is rendered and split yet: run `make build` first")
    _check_render_parts(ready)
    parts = {c.species: [p.output_path(c) for p in SPECIES_STAGES["render"].plan(c)] for c in ready}
    shard_bytes = min(c.cfg.shard_bytes for c in ready)
    fingerprint = md5_hex(
        key_of(
            shard_bytes,
            *(read_marker(p.marker_path(c))["fingerprint"] for c in ready for p in SPECIES_STAGES["render"].plan(c)),
            *(sha256_file(split_path(c)) for c in ready),
        )
    )
    marker_path = Path(work) / RELEASE_MARKER
    marker = read_marker(marker_path)
    if not opts.force and marker and marker.get("fingerprint") == fingerprint and (Path(out) / "shards.csv").exists():
        return {**marker, "skipped": True}
    summary = write_release(
        species_parts=parts,
        splits={c.species: split_path(c) for c in ready},
        failures=[c.ledger_path for c in ready if c.ledger_path.exists()],
        out_dir=Path(out),
        shard_bytes=shard_bytes,
    )
    write_json(marker_path, {"fingerprint": fingerprint, "species": [c.species for c in ready]})
    return {"fingerprint": fingerprint, "species": [c.species for c in ready], "summary": summary}


def status(work: Path, out: Path) -> list[dict]:
    """Per species and stage: partitions done / pending, and failures recorded."""
    rows = []
    for species in species_in(work):
        ctx = make_context(species, work, out)
        ledger = pq.read_table(ctx.ledger_path).to_pylist() if ctx.ledger_path.exists() else []
        for name, stage in SPECIES_STAGES.items():
            try:
                parts = stage.plan(ctx)
            except UserError:
                parts = []
            done = sum(is_done(ctx, p) for p in parts)
            samples_done = sum(p.n_samples for p in parts if is_done(ctx, p))
            rows.append(
                {
                    "species": species,
                    "stage": name,
                    "partitions_done": done,
                    "partitions_pending": len(parts) - done,
                    "samples_done": samples_done,
                    "failed": sum(1 for f in ledger if f["stage"] == name),
                }
            )
    return rows
