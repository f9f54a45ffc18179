"""The split stage: every bank row's cube and split, from the canonical bbox and the salt."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.context import BuildContext
from pipeline.hashing import key_of, md5_hex, sha256_file
from pipeline.ledger import Failure
from pipeline.runner import Partition
from pipeline.sources import open_source
from pipeline.stages.common import read_bank, source_fingerprint
from split_assign import assign, manifest, write_assignment, write_manifest

STAGE = "split"


def split_path(ctx: BuildContext) -> Path:
    return ctx.species_dir / "split.parquet"


def manifest_path(ctx: BuildContext) -> Path:
    return ctx.species_dir / "split" / "manifest.json"


class SplitStage:
    name = STAGE

    def plan(self, ctx: BuildContext) -> list[Partition]:
        cfg = ctx.cfg
        bank = sha256_file(ctx.bank_path) if ctx.bank_path.exists() else "no-bank"
        fp = md5_hex(key_of(bank, cfg.split_salt, cfg.cube_nm, cfg.split_ratios, source_fingerprint(ctx)))
        return [Partition(STAGE, 0, 1, fp)]

    def outputs(self, ctx: BuildContext, part: Partition) -> list[Path]:
        return [split_path(ctx), manifest_path(ctx)]

    def run(self, ctx: BuildContext, part: Partition) -> tuple[int, list[Failure]]:
        cfg = ctx.cfg
        bank = read_bank(ctx, ["combined_sample_hash", "species", "coord_nm"])
        lo, hi = open_source(ctx).canonical_bbox_nm()
        points = pa.table(
            {
                "combined_sample_hash": bank.column("combined_sample_hash"),
                "species": bank.column("species"),
                "coord_nm": bank.column("coord_nm"),
            }
        )
        kwargs = {"cube_nm": cfg.cube_nm, "ratios": tuple(cfg.split_ratios)}
        table = assign(points, lo, hi, ctx.species, cfg.split_salt, **kwargs)
        write_assignment(split_path(ctx), table)
        doc = manifest(table, lo, hi, ctx.species, cfg.split_salt, **kwargs)
        doc["sample_counts"] = "bank rows, including samples that later fail fetch or render (see failures.parquet)"
        write_manifest(manifest_path(ctx), doc)
        return table.num_rows, []
