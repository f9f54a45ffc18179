"""The release writer: merge every species' sorted render parts into parquet shards per split.

One pass over a k-way merge (heapq.merge) of the species streams, each already sorted by
combined_sample_hash, routes every row to the writer of its split. Memory: one part per species,
one row group per split, the demo rows. Everything is written into a temp dir beside `out_dir`,
which is swapped in only when complete, so a killed run never leaves a release that looks whole.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from config.schema import SpeciesConfig
from core import atomic
from core.checkpoints import checkpoint
from core.errors import UserError, is_retryable
from core.hashing import sha256_file
from core.ledger import read_failures
from core.release_schema import (
    IMAGE_COLUMNS,
    METADATA_SIDECAR_SCHEMA,
    NON_IMAGE_COLUMNS,
    RELEASE_SCHEMA,
    RENDER_PART_SCHEMA,
    SPLIT_DIRS,
    SPLITS,
)
from shard.card import render_card
from shard.figure import channel_figure
from shard.lookup import read_shard_row
from shard.report import GALLERY_ROWS, REPORT_DIR, pick_gallery, write_report
from shard.rules import DUAL_TYPES, SAMPLE_TYPES, RowError, check_table

ROW_GROUP_ROWS = 32
SIDECAR_ROW_GROUP_ROWS = 8192
FAILURE_EXAMPLES = 5  # sample ids the report shows per stage and reason
# Fixed writer settings: the same rows give the same bytes (no timestamps in parquet).
SHARD_OPTIONS: dict = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["source_archive", "sample_type", "split", "species"],
    "write_statistics": ["combined_sample_hash", "sample_type", "split", "species"],
    "data_page_size": 1 << 20,
}
SIDECAR_OPTIONS: dict = {"compression": "zstd", "compression_level": 3, "write_statistics": True}
SHARDS_CSV_HEADER = ("path", "sha256", "n_samples", "size", "split", "shard_id")
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}


class ReleaseError(UserError):
    """The inputs cannot make a valid release (bad row, duplicate hash, missing split, ...)."""


# ---------------------------------------------------------------------------------------------
# Inputs: split assignment lookup and sorted species streams


class _SplitLookup:
    """hash -> split of one species, as two sorted numpy arrays (no Python dict of every hash)."""

    def __init__(self, species: str, path: Path) -> None:
        if not Path(path).exists():
            raise ReleaseError(f"species {species}: split assignment {path} does not exist")
        t = pq.read_table(path, columns=["combined_sample_hash", "split"])
        hashes = np.array(t.column("combined_sample_hash").to_pylist(), dtype="S32")
        splits = t.column("split").to_pylist()
        unknown = sorted({s for s in splits if s not in _SPLIT_CODE}, key=str)
        if unknown:
            raise ReleaseError(f"species {species}: {path} has unknown split values {unknown}")
        codes = np.array([_SPLIT_CODE[s] for s in splits], dtype=np.int8)
        order = np.argsort(hashes, kind="stable")
        self.species, self.path = species, path
        self.hashes, self.codes = hashes[order], codes[order]
        if len(self.hashes) > 1 and np.any(self.hashes[1:] == self.hashes[:-1]):
            dup = self.hashes[1:][self.hashes[1:] == self.hashes[:-1]][0].decode()
            raise ReleaseError(f"species {species}: {path} lists {dup} more than once")

    def splits_of(self, hashes: list[str]) -> list[str]:
        q = np.array(hashes, dtype="S32")
        pos = np.searchsorted(self.hashes, q)
        pos_c = np.minimum(pos, max(len(self.hashes) - 1, 0))
        found = (pos < len(self.hashes)) & (self.hashes[pos_c] == q) if len(self.hashes) else np.zeros(len(q), bool)
        if not np.all(found):
            missing = [h for h, ok in zip(hashes, found, strict=True) if not ok]
            raise ReleaseError(
                f"species {self.species}: {len(missing)} rendered samples have no split in {self.path}, "
                f"e.g. {missing[:3]}"
            )
        return [SPLITS[c] for c in self.codes[pos_c].tolist()]


@dataclass
class _Part:
    path: Path
    table: pa.Table  # RELEASE_SCHEMA
    rows: list[dict]  # non-image columns + presence flags (from rules.check_table)
    row_bytes: list[int]  # encoded payload bytes per row (geometry + images)


def _load_part(species: str, path: Path, lookup: _SplitLookup) -> _Part:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReleaseError(f"species {species}: cannot read render part {path}: {exc}") from exc
    if not table.schema.equals(RENDER_PART_SCHEMA, check_metadata=False):
        raise ReleaseError(f"species {species}: render part {path} does not have RENDER_PART_SCHEMA:\n{table.schema}")
    hashes = table.column("combined_sample_hash").to_pylist()
    split_col = pa.array(lookup.splits_of([h or "" for h in hashes]) if hashes else [], pa.string())
    columns = [split_col if name == "split" else table.column(name) for name in RELEASE_SCHEMA.names]
    table = pa.Table.from_arrays(columns, schema=RELEASE_SCHEMA)
    try:
        rows = check_table(table, species=species, where=f"{path}: ")
    except RowError as exc:
        raise ReleaseError(str(exc)) from exc
    return _Part(path, table, rows, _payload_bytes(table))


def _payload_bytes(table: pa.Table) -> list[int]:
    """Bytes of each row's encoded geometry and images: what a row adds to a shard, near enough."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for name in ("geometry", *IMAGE_COLUMNS):
        col = table.column(name)
        values = pc.struct_field(col, "bytes") if pa.types.is_struct(col.type) else col
        total += pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    return total.tolist()


def _species_stream(species: str, sp_idx: int, parts: list[Path], lookup: _SplitLookup) -> Iterator[tuple]:
    """(hash, sp_idx, row, part) in ascending hash order; fails if the parts are not sorted."""
    prev: str | None = None
    for path in parts:
        part = _load_part(species, Path(path), lookup)
        for i, r in enumerate(part.rows):
            h = r["combined_sample_hash"]
            if prev is not None and h == prev:
                raise ReleaseError(f"species {species}: duplicate combined_sample_hash {h} in {path}")
            if prev is not None and h < prev:
                raise ReleaseError(f"species {species}: rows out of hash order: {h} after {prev} in {path}")
            prev = h
            yield h, sp_idx, i, part
        del part


# ---------------------------------------------------------------------------------------------
# Outputs


class _Shard:
    """One open shard file (atomic: temp file renamed on close); size measured on the sink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic.atomic_path(path))
        self._sink = pa.OSFile(str(tmp), "wb")
        self._writer = pq.ParquetWriter(self._sink, RELEASE_SCHEMA, **SHARD_OPTIONS)
        self.n = 0
        self.groups = 0

    @property
    def data_bytes(self) -> int:
        """Bytes written so far: the row groups (the footer comes at close)."""
        return self._sink.tell()

    def write(self, table: pa.Table) -> int:
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.n += table.num_rows
        self.groups += 1
        return self._sink.tell()

    def close(self) -> int:
        """Close the file; returns its footer's bytes (what closing added)."""
        data = self._sink.tell()
        self._writer.close()
        footer = self._sink.tell() - data
        self._sink.close()
        self._stack.close()
        return footer

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._sink.close()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def footer_cost(table: pa.Table) -> tuple[float, float]:
    """(fixed, per row group) bytes of a shard's parquet footer: one row of `table` written in memory as one and as
    two row groups. The footer holds the schema (with the Hugging Face features) once and each row group's column
    chunk metadata and statistics: with many small row groups (rows that compress well) it is a large share of a
    file, so the cut counts it."""
    one = table.slice(0, 1)
    sizes = []
    for groups in (1, 2):
        sink = pa.BufferOutputStream()
        writer = pq.ParquetWriter(sink, RELEASE_SCHEMA, **SHARD_OPTIONS)
        for _ in range(groups):
            writer.write_table(one, row_group_size=1)
        data = sink.tell()
        writer.close()
        sizes.append(sink.tell() - data)
    per_group = float(sizes[1] - sizes[0])
    return sizes[0] - per_group, per_group


class _Sidecar:
    """metadata/<dir>.parquet: every non-image column + shard_path, streamed in large row groups."""

    def __init__(self, path: Path) -> None:
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic.atomic_path(path))
        self._writer = pq.ParquetWriter(str(tmp), METADATA_SIDECAR_SCHEMA, **SIDECAR_OPTIONS)
        self._buf: list[pa.Table] = []
        self._n = 0

    def add(self, rows: pa.Table, shard_path: str) -> None:
        small = rows.select(list(NON_IMAGE_COLUMNS))
        small = small.take(pa.array(np.arange(small.num_rows)))  # copy: do not pin the image buffers
        small = small.append_column("shard_path", pa.array([shard_path] * small.num_rows, pa.string()))
        self._buf.append(small)
        self._n += small.num_rows
        if self._n >= SIDECAR_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            t = pa.concat_tables(self._buf).cast(METADATA_SIDECAR_SCHEMA)
            self._writer.write_table(t, row_group_size=t.num_rows)
        self._buf, self._n = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


@dataclass
class _SplitWriter:
    """All shards of one split, plus its sidecar.

    The cut is on bytes as written: a shard closes once its row groups plus its footer (estimated: `footer_cost`,
    then what the shards closed so far measured) reach `shard_bytes`, so it lands within a row group of the target.
    A row group holds at most `row_group_rows` rows and about 1/16 of the target as written: a row's payload bytes
    (its encoded geometry and images) times the ratio of bytes written to payload bytes seen so far in this split,
    so that rows which compress well make row groups of the same written size as rows which do not."""

    split: str
    root: Path
    shard_bytes: int
    row_group_rows: int
    shards: list[dict] = field(default_factory=list)
    _buf: list[tuple[int, pa.Table, int]] = field(default_factory=list)
    _buf_bytes: int = 0
    _shard: _Shard | None = None
    _sidecar: _Sidecar | None = None
    _payload_seen: int = 0  # payload bytes of the rows written so far (this split)
    _written_seen: int = 0  # the bytes their row groups took in the shards
    _footer: tuple[float, float] | None = None  # (fixed, per row group) bytes of a footer

    def __post_init__(self) -> None:
        self.dirname = SPLIT_DIRS[self.split]
        self._sidecar = _Sidecar(self.root / "metadata" / f"{self.dirname}.parquet")

    def _relpath(self, shard_id: int) -> str:
        return f"{self.dirname}/{self.dirname}-{shard_id:05d}.parquet"

    def _as_written(self, payload: int) -> float:
        """Bytes `payload` payload bytes are expected to take in a shard (1:1 until a row group was written)."""
        return payload * self._written_seen / self._payload_seen if self._payload_seen else float(payload)

    def add(self, part: _Part, i: int) -> None:
        self._buf.append((id(part), part.table, i))
        self._buf_bytes += part.row_bytes[i]
        if len(self._buf) >= self.row_group_rows or self._as_written(self._buf_bytes) * 16 >= self.shard_bytes:
            self._flush()

    def _open(self) -> _Shard:
        if self._shard is None:
            self._shard = _Shard(self.root / self._relpath(len(self.shards)))
        return self._shard

    def _flush(self) -> None:
        if not self._buf:
            return
        pieces, run, run_key, run_table = [], [], None, None
        for key, table, i in self._buf:
            if key != run_key and run:
                pieces.append(run_table.take(pa.array(run, pa.int64())))
                run = []
            run_key, run_table = key, table
            run.append(i)
        pieces.append(run_table.take(pa.array(run, pa.int64())))
        payload = self._buf_bytes
        self._buf = []
        self._buf_bytes = 0
        group = pa.concat_tables(pieces).combine_chunks()
        if self._footer is None:
            self._footer = footer_cost(group)
        shard = self._open()
        before = shard.data_bytes
        written = shard.write(group)
        self._payload_seen += payload
        self._written_seen += written - before
        self._sidecar.add(group, self._relpath(len(self.shards)))
        fixed, per_group = self._footer
        if written + fixed + per_group * shard.groups >= self.shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        shard, self._shard = self._shard, None
        groups = shard.groups
        footer = shard.close()
        if self._footer is not None and groups:  # what this footer measured, for the next shards' cut
            fixed = self._footer[0]
            self._footer = (fixed, max(0.0, (footer - fixed) / groups))
        rel = self._relpath(len(self.shards))
        self.shards.append(
            {
                "path": rel,
                "sha256": sha256_file(shard.path),
                "n_samples": shard.n,
                "size": shard.path.stat().st_size,
                "split": self.split,
                "shard_id": len(self.shards),
            }
        )
        checkpoint("release-shard-closed")

    def close(self) -> None:
        self._flush()
        # An empty split gets no shard (and no entry in the card's `configs`: datasets refuses an empty split).
        if self._shard is not None:
            self._close_shard()
        self._sidecar.close()

    def abort(self) -> None:
        if self._shard is not None:
            self._shard.abort()
        if self._sidecar is not None:
            self._sidecar.abort()


# ---------------------------------------------------------------------------------------------
# Failures ledgers and split manifests (for the card)


def _read_failures(paths: list[Path]) -> dict:
    by_stage_reason: Counter = Counter()
    by_species: Counter = Counter()
    by_type: Counter = Counter()
    examples: dict[tuple[str, str], set[str]] = {}
    for path in sorted(Path(p) for p in paths):
        try:
            failures = read_failures(path, missing_ok=False)
        except UserError as exc:
            raise ReleaseError(str(exc)) from None
        for f in failures:
            by_stage_reason[(f.stage, f.reason)] += 1
            by_species[f.species] += 1
            by_type[f.sample_type] += 1
            examples.setdefault((f.stage, f.reason), set()).add(f.sample_id)
    return {
        "total": sum(by_stage_reason.values()),
        "by_stage_reason": [{"stage": s, "reason": r, "n": n, "examples": sorted(examples[(s, r)])[:FAILURE_EXAMPLES],
                             "retried": is_retryable(r)}
                            for (s, r), n in sorted(by_stage_reason.items())],  # fmt: skip
        "by_species": dict(sorted(by_species.items())),
        "by_sample_type": dict(sorted(by_type.items())),
    }


def _read_manifest(path: Path | None) -> dict | None:
    """What the card says of a species' split, from its manifest (None: no manifest given)."""
    if path is None or not Path(path).exists():
        return None
    m = json.loads(Path(path).read_text())
    cubes = Counter(c["split"] for c in m.get("cubes", []))
    return {
        "bbox_nm": m.get("bbox_nm"),
        "cube_nm": m.get("cube_nm"),
        "salt": m.get("salt"),
        "ratios": m.get("ratios"),
        "cubes_per_split": {s: cubes.get(s, 0) for s in SPLITS},
    }


# ---------------------------------------------------------------------------------------------
# The writer


def _swap_in(tmp_dir: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".{out_dir.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old.exists():
        shutil.rmtree(old)


def write_release(
    species_parts: dict[str, list[Path]],
    splits: dict[str, Path],
    failures: list[Path],
    out_dir: Path,
    shard_bytes: int,
    demo_rows_per_type: int = 4,
    extra_card_info: dict | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    split_manifests: dict[str, Path] | None = None,
    configs: dict[str, SpeciesConfig] | None = None,
    build_info: dict | None = None,
) -> dict:
    """Write the release to `out_dir` (replacing it whole at the end). Returns a summary dict.

    `species_parts`: species -> its render parts in order (part k's hashes all below part k+1's).
    `splits`: species -> its split assignment parquet (combined_sample_hash, split, ...).
    `failures`: the failures ledgers to count in the card.
    `split_manifests`: species -> its split manifest (the card states each species' split).
    `configs`, `build_info`: what the report (shard/report.py) shows beside the counts and under "Build".
    """
    _check_arguments(species_parts, splits, shard_bytes, row_group_rows)
    out_dir = Path(out_dir)
    failures_summary = _read_failures(failures)  # the inputs are read before anything is written
    species = sorted(species_parts)
    lookups = {sp: _SplitLookup(sp, Path(splits[sp])) for sp in species}
    manifests = {sp: _read_manifest((split_manifests or {}).get(sp)) for sp in species}
    tmp_dir = _fresh_tmp_dir(out_dir)
    tally = _Tally(demo_rows_per_type)
    try:
        streams = [_species_stream(sp, n, species_parts[sp], lookups[sp]) for n, sp in enumerate(species)]
        shard_rows = _write_shards(streams, tmp_dir, shard_bytes, row_group_rows, tally)
        demo_table = _write_demo(tmp_dir, tally.demo, row_group_rows)
        _write_shards_csv(tmp_dir, shard_rows)
        figure = _write_figure(tmp_dir, tally.figure_rows)
        stats = _stats(tally, shard_rows, failures_summary, manifests, demo_table.num_rows, figure)
        atomic.write_text(tmp_dir / "README.md", render_card(stats, extra_card_info or {}, configs or {}))
        write_report(tmp_dir, stats, pick_gallery(tally.gallery), configs or {}, build_info or {})
        _swap_in(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return {"out_dir": str(out_dir), **stats}


def _check_arguments(
    species_parts: dict[str, list[Path]], splits: dict[str, Path], shard_bytes: int, row_group_rows: int
) -> None:
    if shard_bytes < 1:
        raise ReleaseError(f"shard_bytes must be positive, got {shard_bytes}")
    if row_group_rows < 1:
        raise ReleaseError(f"row_group_rows must be positive, got {row_group_rows}")
    if set(species_parts) - set(splits):
        raise ReleaseError(f"no split assignment for species {sorted(set(species_parts) - set(splits))}")


def _fresh_tmp_dir(out_dir: Path) -> Path:
    """The empty temp dir beside out_dir that the release is written into (a killed run's is removed)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.parent / f".{out_dir.name}.building"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)  # left by a killed run
    tmp_dir.mkdir()
    return tmp_dir


@dataclass
class _Tally:
    """What the card, the demo shard and the figure need from the rows, gathered in the one pass of the merge."""

    demo_rows_per_type: int
    counts: Counter = field(default_factory=Counter)  # (split, species, sample_type, has_after_mask)
    demo: dict[str, list[pa.Table]] = field(default_factory=lambda: {t: [] for t in SAMPLE_TYPES})
    figure_rows: dict[str, pa.Table] = field(default_factory=dict)
    metadata_keys: dict[str, list[str]] = field(default_factory=dict)  # archive -> the keys of its first row
    gallery: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (species, type) -> first rows by hash

    def add(self, part: _Part, i: int) -> None:
        r = part.rows[i]
        split, st = r["split"], r["sample_type"]
        self.counts[(split, r["species"], st, bool(r["has_after_mask"]))] += 1
        if r["source_archive"] not in self.metadata_keys:
            self.metadata_keys[r["source_archive"]] = sorted(json.loads(r["metadata"]))
        if split == "train" and len(self.demo[st]) < self.demo_rows_per_type:
            self.demo[st].append(part.table.take([i]))
        shown = self.gallery.setdefault((r["species"], st), [])
        if len(shown) < GALLERY_ROWS:  # rows come in hash order: the first ones by hash
            shown.append(part.table.take([i]).to_pylist()[0])
        # The figure: the first train row of each kind (dual / single), else the first of any split.
        kind = ("train:" if split == "train" else "any:") + ("dual" if st in DUAL_TYPES else "single")
        if kind not in self.figure_rows:
            self.figure_rows[kind] = part.table.take([i])


def _write_shards(
    streams: list[Iterator[tuple]], tmp_dir: Path, shard_bytes: int, row_group_rows: int, tally: _Tally
) -> list[dict]:
    """Route every row of the k-way merge of the species streams to its split's writer (tallying it), close
    them, and return the shard rows of shards.csv, by path. On failure the open shards are aborted."""
    writers: dict[str, _SplitWriter] = {}
    try:
        writers = {s: _SplitWriter(s, tmp_dir, shard_bytes, row_group_rows) for s in SPLITS}
        prev: str | None = None
        for h, _sp_idx, i, part in heapq.merge(*streams, key=itemgetter(0)):
            if h == prev:
                raise ReleaseError(f"duplicate combined_sample_hash {h} across species (second in {part.path})")
            prev = h
            writers[part.rows[i]["split"]].add(part, i)
            tally.add(part, i)
        if not tally.counts:
            raise ReleaseError("no rendered rows: refusing to write an empty release")
        for s in SPLITS:
            writers[s].close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return sorted((row for w in writers.values() for row in w.shards), key=itemgetter("path"))


def _write_demo(tmp_dir: Path, demo: dict[str, list[pa.Table]], row_group_rows: int) -> pa.Table:
    """demo.parquet: the first train rows of every sample type, by hash, with the full schema."""
    demo_rows = sorted(
        (t for ts in demo.values() for t in ts), key=lambda t: t.column("combined_sample_hash")[0].as_py()
    )
    demo_table = pa.concat_tables(demo_rows).combine_chunks() if demo_rows else RELEASE_SCHEMA.empty_table()
    atomic.write_parquet(tmp_dir / "demo.parquet", demo_table, **SHARD_OPTIONS, row_group_size=row_group_rows)
    return demo_table


def _write_shards_csv(tmp_dir: Path, shard_rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHARDS_CSV_HEADER)
    for row in shard_rows:
        w.writerow([row[c] for c in SHARDS_CSV_HEADER])
    atomic.write_text(tmp_dir / "shards.csv", buf.getvalue())


def _write_figure(tmp_dir: Path, figure_rows: dict[str, pa.Table]) -> str | None:
    """The card's channel figure from a dual and a single row (train ones first); its path, None if no row."""
    dual = figure_rows.get("train:dual", figure_rows.get("any:dual"))
    single = figure_rows.get("train:single", figure_rows.get("any:single"))
    if dual is None and single is None:
        return None
    figure = "figures/channel_decomposition.png"
    rows = [t.to_pylist()[0] if t is not None else None for t in (dual, single)]
    try:
        pngs = channel_figure(*rows)
    except Exception as exc:  # undecodable bytes: name the rows in one line, not a library's traceback
        named = " or ".join(f"{r['combined_sample_hash']} ({r['species']} {r['sample_type']})" for r in rows if r)
        raise ReleaseError(f"the card's channel figure cannot draw row {named}: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}; its render part holds bytes that do not decode") from exc
    atomic.write_bytes(tmp_dir / figure, pngs)
    return figure


def _stats(
    tally: _Tally, shard_rows: list[dict], failures: dict, manifests: dict, n_demo: int, figure: str | None
) -> dict:
    """The counts the card states (and write_release returns)."""
    rows = {s: 0 for s in SPLITS}
    by_type = {s: {t: 0 for t in SAMPLE_TYPES} for s in SPLITS}
    by_species: dict[str, dict[str, int]] = {}
    by_species_type: dict[str, dict[str, dict[str, int]]] = {}
    split_edits = {"total": 0, "with_after_mask": 0}
    for (split, sp, st, ham), n in sorted(tally.counts.items()):
        rows[split] += n
        by_type[split][st] += n
        by_species.setdefault(sp, {s: 0 for s in SPLITS})[split] += n
        cell = by_species_type.setdefault(sp, {s: {} for s in SPLITS})[split]
        cell[st] = cell.get(st, 0) + n
        if st == "split_edit":
            split_edits["total"] += n
            split_edits["with_after_mask"] += n if ham else 0
    shards = {s: {"n_shards": 0, "bytes": 0} for s in SPLITS}
    for r in shard_rows:
        shards[r["split"]]["n_shards"] += 1
        shards[r["split"]]["bytes"] += r["size"]
    return {
        "rows": rows,
        "total_rows": sum(rows.values()),
        "by_type": by_type,
        "by_species": dict(sorted(by_species.items())),
        "by_species_type": dict(sorted(by_species_type.items())),
        "split_edits": split_edits,
        "shards": shards,
        "shard_list": shard_rows,
        "failures": failures,
        "split_manifests": manifests,
        "n_demo_rows": n_demo,
        "figure": figure,
        "metadata_keys": dict(sorted(tally.metadata_keys.items())),
    }


SCAN_ROWS = 65_536  # sidecar rows read at a time by `rewrite_report`: its memory, whatever the release's size
_SCAN_COLUMNS = ["combined_sample_hash", "split", "species", "sample_type", "has_after_mask", "shard_path"]
_COUNT_KEYS = ["split", "species", "sample_type", "has_after_mask"]


def scan_sidecar(path: Path, counts: Counter, firsts: dict[tuple[str, str], list[dict]],
                 per_key: int = GALLERY_ROWS) -> None:  # fmt: skip
    """Stream one sidecar, SCAN_ROWS rows at a time: add its rows to `counts` (split, species, type, has_after_mask)
    and keep in `firsts` the `per_key` smallest hashes of each (species, sample type) seen so far, with their shard
    paths. Memory is a batch and the kept rows, not the sidecar: the report of a release of any size fits."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=SCAN_ROWS, columns=_SCAN_COLUMNS):
        t = pa.Table.from_batches([batch])
        for g in t.group_by(_COUNT_KEYS).aggregate([("combined_sample_hash", "count")]).to_pylist():
            counts[tuple(g[k] for k in _COUNT_KEYS)] += g["combined_sample_hash_count"]
        t = t.sort_by("combined_sample_hash")
        for key in t.select(["species", "sample_type"]).group_by(["species", "sample_type"]).aggregate([]).to_pylist():
            sp, st = key["species"], key["sample_type"]
            mask = pc.and_(pc.equal(t.column("species"), sp), pc.equal(t.column("sample_type"), st))
            head = t.filter(mask).slice(0, per_key).to_pylist()
            kept = firsts.get((sp, st), []) + head
            firsts[(sp, st)] = sorted(kept, key=itemgetter("combined_sample_hash"))[:per_key]


def rewrite_report(
    out_dir: Path, failures: list[Path], configs: dict[str, SpeciesConfig], build_info: dict
) -> Path:
    """The report of a release already written (`python -m pipeline report`), without touching its shards: the
    counts from its sidecars (streamed: memory does not grow with the release) and shards.csv, the gallery rows read
    from their shards (one row group each), the failures from the ledgers. Swapped in whole; returns the index
    path."""
    out_dir = Path(out_dir)
    if not (out_dir / "shards.csv").exists():
        raise ReleaseError(f"{out_dir} has no shards.csv: build a release first (`make build`)")
    tally = _Tally(0)
    firsts: dict[tuple[str, str], list[dict]] = {}
    for split in SPLITS:
        sidecar = out_dir / "metadata" / f"{SPLIT_DIRS[split]}.parquet"
        if sidecar.exists():
            scan_sidecar(sidecar, tally.counts, firsts)
    for key, chosen in firsts.items():
        tally.gallery[key] = [read_shard_row(out_dir / r["shard_path"], r["combined_sample_hash"]) for r in chosen]
    with open(out_dir / "shards.csv", newline="") as fh:
        shard_rows = [{**r, "size": int(r["size"])} for r in csv.DictReader(fh)]
    stats = _stats(tally, shard_rows, _read_failures(failures), {}, 0, None)
    tmp_dir = out_dir / f".{REPORT_DIR}.building"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        write_report(tmp_dir.parent, stats, pick_gallery(tally.gallery), configs, build_info, folder=tmp_dir.name)
        _swap_in(tmp_dir, out_dir / REPORT_DIR)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir / REPORT_DIR / "index.html"
