"""The fetch stage: each bank row's meshes and cutouts, one npz per sample named by the key of its inputs.

`fetch/samples/HH/<hash>-<key>.npz`: the key covers the bank row, the fetch keys of the config (source, mips,
EM window), the source's identity and the code version. A sample whose file exists, with a mesh crop box at
least as wide as the current config needs, is kept: the crop box covers the extent range's max, so a new camera
(`seed`, `extent_nm` within the fetched box, `center_jitter_nm`) re-renders without refetching. Under
`keep_fetched: false` a sample's file is dropped once rendered and kept as its marker's record
(pipeline/stages/fetched_disk.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.fetched import crop_half_of
from core.hashing import sha256_file
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import read_marker
from pipeline.reuse import PriorRun
from pipeline.sources import open_source
from pipeline.stage import Outcome, Partition, StageBase
from pipeline.stages.common import (
    SOURCE_KEYS,
    bank_partitions,
    requests_met,
    rows_of_partition,
    run_samples,
    sample_key,
    source_identity,
)
from pipeline.stages.fetch_meshes import PartitionMeshes
from pipeline.stages.fetch_sample import CROP_BOX_KEYS, STAGE, crop_box_half_nm, fetch_sample
from pipeline.stages.select import STAGE as SELECT


def _known_sha256(ctx: BuildContext, prior: PriorRun | None, path: Path) -> str:
    """A kept file's sha256: an earlier marker's record when size and mtime still match, else read it."""
    rec = prior.digests.get(str(path.relative_to(ctx.work_dir))) if prior is not None else None
    st = path.stat()
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return rec["sha256"]
    return sha256_file(path)


def fetched_files(ctx: BuildContext, marker: dict | None) -> dict[str, tuple[Path, str]]:
    """sample hash -> (npz path, sha256) of a fetch partition's marker, the files dropped under `keep_fetched: false`
    too (no longer on disk)."""
    out = {}
    for rel, rec in {**(marker or {}).get("dropped", {}), **(marker or {}).get("outputs", {})}.items():
        path = ctx.work_dir / rel
        out[path.name.split("-")[0]] = (path, rec["sha256"])
    return out


class FetchStage(StageBase):
    name = STAGE
    reads = (
        *SOURCE_KEYS,
        "em_cloudpath",
        "seg_cloudpath",
        "em_mip",
        "seg_mip",
        "em_window_nm",
        "faults",
    )
    consumes = (SELECT,)
    unit = "rows"  # bank rows, one sample each
    keys_samples = True
    widened_by = CROP_BOX_KEYS  # a sample is refetched only when its mesh crop box must grow
    widened_what = "mesh crop box"

    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        return bank_partitions(ctx, graph, self, source_identity(ctx), crop_box_half_nm(ctx.cfg))

    def run(
        self,
        ctx: BuildContext,
        part: Partition,
        prior: PriorRun | None,
        on_sample: Callable[[str, tuple[Path, str] | None], None] | None = None,
    ) -> Outcome:
        """Fetch the partition's samples on `fetch_threads` I/O threads. `on_sample(hash, (path, sha256) or None)`
        hears of each sample, in order, as soon as its file is settled (the render streaming from this fetch)."""
        source = open_source(ctx)
        half = crop_box_half_nm(ctx.cfg)
        identity = source_identity(ctx)
        paths: dict[str, tuple[Path, str | None]] = {}
        dropped: dict[str, dict] = {}  # kept samples whose file was dropped (keep_fetched: false): their records
        rows = rows_of_partition(ctx, part)
        meshes = PartitionMeshes(source, ctx.cfg, rows)  # each root fetched once per partition, over a union box

        def key_of_row(row: dict) -> str:
            return sample_key(ctx, self, row["row_digest"], identity)

        def reuse(row: dict, key: str) -> bool:
            path = ctx.fetched_path(row["combined_sample_hash"], key)
            if crop_half_of(path) >= half:
                paths[row["combined_sample_hash"]] = (path, None)
                return True
            rec = prior.dropped.get(str(path.relative_to(ctx.work_dir))) if prior is not None else None
            if rec is not None and rec.get("crop_half_nm", -1.0) >= half:  # dropped, same key: a render keeps it
                paths[row["combined_sample_hash"]] = (path, rec["sha256"])
                dropped[str(path.relative_to(ctx.work_dir))] = rec
                return True
            return False

        def build(row: dict, key: str) -> tuple[Path, str]:
            h = row["combined_sample_hash"]
            path = ctx.fetched_path(h, key)
            for stale in path.parent.glob(f"{h}-*.npz"):  # an earlier key's file: its inputs changed
                stale.unlink(missing_ok=True)
            with source.sample(h):
                sample = fetch_sample(source, ctx.cfg, row, meshes)
            paths[h] = (path, sample.save(path))
            return paths[h]

        def settled(row: dict, value: object) -> None:
            meshes.done(row)  # every row, built or kept: a mesh goes once its last sample has settled
            if on_sample is None:
                return
            found = paths.get(row["combined_sample_hash"])
            if found is None or value is None:
                on_sample(row["combined_sample_hash"], None)
                return
            path, sha = found
            on_sample(row["combined_sample_hash"], (path, sha or _known_sha256(ctx, prior, path)))

        outcome = run_samples(ctx, part, rows, key_of_row, reuse, build, prior, ctx.cfg.fetch_threads, settled)
        outcome.outputs = sorted(p for p, _ in paths.values() if str(p.relative_to(ctx.work_dir)) not in dropped)
        outcome.dropped = dropped
        outcome.stats = requests_met()
        return outcome

    def finish(self, ctx: BuildContext, graph: StageGraph, parts: list[Partition], force: bool) -> str | None:
        """Delete fetched files no current partition records (samples that left the bank, older keys)."""
        kept = {str(path) for p in parts for path, _ in fetched_files(ctx, read_marker(p.marker_path(ctx))).values()}
        removed = 0
        for path in ctx.fetched_dir.glob("*/*.npz"):
            if str(path) not in kept:
                path.unlink(missing_ok=True)
                removed += 1
        return f"{removed} stale fetched files removed" if removed else None
