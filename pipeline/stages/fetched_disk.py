"""Disk as a choice: `keep_fetched: false` drops each fetch partition's files once its render partition is sealed.

Fetched files are the largest part of a work dir (~345 KB per sample on the demo, beside ~250 KB of render parts):
for the whole release, hundreds of GB. They are kept by default because re-rendering with another camera (`seed`,
`extent_nm`, `center_jitter_nm`) is a main use, and fetching them again from public servers costs more than the
disk. With `keep_fetched: false` (`config/<species>.yaml`) each file goes once its sample is rendered:

- **Dropping** (`drop_fetched`, the render stage's `sealed` step): the fetch marker's records move from `outputs` to
  `dropped` (the marker is rewritten first, then the files go). The digest render's fingerprint covers counts both
  (`pipeline.markers.outputs_digest`), and a dropped file is not looked for on disk: dropping changes no fingerprint,
  no sample key and no release byte, and a rebuild with nothing to do redoes nothing.
- **Reuse**: a render row whose key is unchanged is kept without its fetched file; a fetch partition that runs again
  keeps a dropped sample whose key and crop box still serve (`FetchStage.run`), so a missing file is never a reason to
  redo a sample whose render is current.
- **Fetching again what a re-render needs** (`refetch_dropped`, `ensure_fetched`): a render that must build a
  sample whose file was dropped fetches that sample again first, and says so (one line per partition on stderr).
  Fetched files have the same bytes for the same data (`FetchedSample.save`, pinned by tests/core/test_fetched.py):
  from a source that gives the same data it is the recorded file, and every key stays as it was. When the bytes
  differ (the source changed, or a narrower crop box since), the fetch marker records the new file, so the render's
  keys name what it rendered.

The switch is not an input of any stage (`pipeline/invalidation.py: NOT_INPUTS`): turning it on or off redoes
nothing by itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.errors import UserError
from core.fetched import crop_half_of
from core.layout import MARKER
from pipeline.context import BuildContext
from pipeline.markers import read_marker
from pipeline.runner import amend
from pipeline.sources import open_source
from pipeline.stages.fetch_meshes import PartitionMeshes
from pipeline.stages.fetch_sample import STAGE as FETCH_STAGE
from pipeline.stages.fetch_sample import fetch_sample


def drop_fetched(ctx: BuildContext, index: int) -> int:
    """Drop the fetched files of fetch partition `index` (rendered and sealed): their records move to the marker's
    `dropped`, with the crop box each was made with; returns how many files went. The marker is written first: a
    kill before the files go leaves files that the next drop of the partition removes, never a record of a file
    that is not there."""
    marker_path = ctx.part_file(FETCH_STAGE, index, MARKER)
    marker = read_marker(marker_path)
    if not marker:
        return 0
    outputs = marker.get("outputs", {})
    dropped = dict(marker.get("dropped", {}))
    for rel, rec in outputs.items():
        dropped[rel] = {**rec, "crop_half_nm": crop_half_of(ctx.work_dir / rel)}
    if outputs:
        amend(ctx, marker_path, drop={rel: dropped[rel] for rel in outputs})
    for rel in dropped:  # a file fetched again for a re-render goes too
        (ctx.work_dir / rel).unlink(missing_ok=True)
    return len(outputs)


def refetch(ctx: BuildContext, rows: list[dict], files: dict[str, tuple[Path, str]]) -> dict[str, str | Exception]:
    """Fetch again the dropped files of `rows` (`files`: hash -> (path, recorded sha256)) on `fetch_threads` I/O
    threads, each root's mesh once over the rows' boxes. Returns hash -> the sha256 written, or the exception that
    stopped the sample (the render ledgers it as the sample's failure)."""
    source = open_source(ctx)
    meshes = PartitionMeshes(source, ctx.cfg, rows)

    def one(row: dict) -> str | Exception:
        h = row["combined_sample_hash"]
        try:
            with source.sample(h):
                return fetch_sample(source, ctx.cfg, row, meshes).save(files[h][0])
        except Exception as exc:  # the render stage decides what it is (a reason of the sample, or unexpected)
            return exc

    out: dict[str, str | Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, ctx.cfg.fetch_threads)) as pool:
        for row, got in zip(rows, pool.map(one, rows), strict=True):
            out[row["combined_sample_hash"]] = got
            meshes.done(row)
    return out


def record_refetched(ctx: BuildContext, index: int, paths: list[Path]) -> None:
    """Files fetched again whose bytes differ from their record: the fetch marker (sealed) records them as outputs,
    with their own sha256, so that the render's keys name what it rendered."""
    amend(ctx, ctx.part_file(FETCH_STAGE, index, MARKER), add=paths)


def refetch_dropped(
    ctx: BuildContext, index: int, rows: list[dict], files: dict[str, tuple[Path, str]],
    must_build: Callable[[str, str], bool],
) -> dict[str, str | Exception]:  # fmt: skip
    """Before a render from a sealed fetch: fetch again, together, the dropped files of the rows it must build
    (`must_build(hash, recorded sha256)`: no row or failure of theirs is kept under that key). `files` then gives what
    was written; a file whose bytes differ from its record is recorded by the fetch marker (partition `index`)."""
    need = [r for r in rows if (got := files.get(r["combined_sample_hash"])) is not None and not got[0].exists()
            and must_build(r["combined_sample_hash"], got[1])]  # fmt: skip
    if not need:
        return {}
    done = refetch(ctx, need, files)
    changed = []
    for h, got in done.items():
        if isinstance(got, str) and got != files[h][1]:
            files[h] = (files[h][0], got)
            changed.append(files[h][0])
    if changed:
        record_refetched(ctx, index, changed)
    return done


def ensure_fetched(
    ctx: BuildContext, part_name: str, row: dict, path: Path, sha256: str, refetched: dict[str, str | Exception]
) -> None:
    """The fetched file a render is about to read is there: a sample whose fetch failed again raises that failure; a
    file still dropped (met while its fetch partition runs again: the keys of both stages changed) is fetched again
    here, and must give the recorded bytes (the fetch marker is not sealed yet to record others)."""
    h = row["combined_sample_hash"]
    if isinstance(refetched.get(h), Exception):
        raise refetched[h]  # type: ignore[misc]
    if path.exists():
        return
    got = refetch(ctx, [row], {h: (path, sha256)})[h]
    refetched[h] = got
    if isinstance(got, Exception):
        raise got
    if got != sha256:
        path.unlink(missing_ok=True)
        raise UserError(f"species {ctx.species}, render {part_name}: sample {h}'s fetched file was dropped "
                        "(keep_fetched: false) and fetching it again gave other bytes than its fetch marker "
                        "records; rerun the build: it fetches it again before rendering")  # fmt: skip


def say_refetched(ctx: BuildContext, part_name: str, n: int) -> None:
    """One line: a re-render fetched `n` samples again (their files were dropped under keep_fetched: false)."""
    print(f"species {ctx.species}, render {part_name}: {n} samples fetched again (their fetched files were dropped: "
          f"keep_fetched is false in config/{ctx.species}.yaml)", file=sys.stderr)  # fmt: skip
