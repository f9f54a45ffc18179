"""The bank stage's logic (its adapter to the runner: stages/bank.py): candidate samples of the five types, from the
source's tables, and the selection by budgets.

One row per candidate sample (ARCHITECTURE.md, contract §1). Per-type budgets keep the rows with the
smallest priority hashed from the sample key, never the first to arrive, so a rebuild picks the
same rows. Bad input becomes a failures-ledger row with its reason; the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from config import SpeciesConfig
from core.adjacency import adjacent_roots
from core.errors import PartlyUnavailable, SampleError, Unavailable, is_retryable
from core.hashing import md5_hex, unit_interval
from core.ledger import Failure, describe
from core.samples import (
    ADJACENT_CUTOUT_NM,
    COORD_KEY,
    LABELS,
    OP_TYPES,
    SAME_NEURON,
    SAMPLE_TYPES,
    archive_hash,
    combined_hash,
    dumps_metadata,
    epoch_ms,
    epoch_seconds,
    junction_key,
    metadata_keys,
    op_key,
    source_archive,
    synapse_key,
)
from pipeline.sources.base import CHANGE_LOG_COLUMNS, SYNAPSE_COLUMNS, OperationDetails, Source

STAGE = "bank"
NON_SCORE_SYNAPSE_COLUMNS = frozenset({"pre_pt_supervoxel_id", "post_pt_supervoxel_id", "valid", "size"})

CANDIDATE_SCHEMA = pa.schema(
    [
        ("combined_sample_hash", pa.string()),
        ("source_archive_sample_hash", pa.string()),
        ("source_archive", pa.string()),
        ("sample_type", pa.string()),
        ("species", pa.string()),
        ("same_neuron", pa.bool_()),
        ("false_split_correction_label", pa.float64()),
        ("false_merge_identification_label", pa.float64()),
        ("coord_key", pa.string()),
        ("coord_nm", pa.list_(pa.float64(), 3)),
        ("timestamp", pa.float64()),  # the op's T, or as_of for controls
        ("cutout_timestamp", pa.float64()),  # when segment labels are resolved
        ("geometry_roots", pa.list_(pa.string())),  # meshes rendered: 2 (dual) or 1 (single)
        ("mask_a_root", pa.string()),
        ("mask_b_root", pa.string()),  # "" when the row has no segment B (junctions)
        ("after_roots", pa.list_(pa.string())),  # split_edit: the two after roots (split masks)
        ("priority", pa.float64()),
        ("metadata", pa.string()),
    ]
)
# The bank: candidates selected by budget, plus the digest of each row's content (pipeline.stages keys).
BANK_SCHEMA = CANDIDATE_SCHEMA.append(pa.field("row_digest", pa.string()))


@dataclass
class BankResult:
    rows: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    log: pa.Table | None = None  # the batch's change-log rows (a retry of one root's change log merges into them)
    kept: int = 0  # rows of an earlier run kept by a retry


class _Collector:
    def __init__(self, cfg: SpeciesConfig, nt_keys: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.species = cfg.species
        self.nt_keys = nt_keys
        self.result = BankResult()

    def fail(self, sample_id: str, sample_type: str, reason: str, exception: str = "") -> None:
        self.result.failures.append(Failure(sample_id, self.species, sample_type, STAGE, reason, exception))

    def add(
        self,
        sample_type: str,
        key: str,
        coord_nm: Iterable[float],
        timestamp: float,
        cutout_timestamp: float,
        geometry_roots: list[int],
        mask_a: int,
        mask_b: int | None,
        after_roots: list[int],
        meta: dict,
    ) -> None:
        archive = source_archive(sample_type, self.species)
        sah = archive_hash(key)
        chash = combined_hash(archive, sah)
        coord = [float(v) for v in coord_nm]
        full = {k: None for k in metadata_keys(sample_type, self.nt_keys, rendered=False)}
        full.update(meta)
        full.update({"species": self.species, COORD_KEY[sample_type]: coord})
        # the release's forms: integer epoch seconds; null cutout_timestamp on operation rows (the exact
        # operation time is kept in timestamp_ms; the bank's own float columns below stay exact)
        if sample_type in OP_TYPES:
            full.update({"timestamp": epoch_seconds(timestamp), "timestamp_ms": epoch_ms(timestamp)})
        else:
            full["cutout_timestamp"] = epoch_seconds(cutout_timestamp)
        fsc, fmi = LABELS[sample_type]
        self.result.rows.append(
            {
                "combined_sample_hash": chash,
                "source_archive_sample_hash": sah,
                "source_archive": archive,
                "sample_type": sample_type,
                "species": self.species,
                "same_neuron": SAME_NEURON[sample_type],
                "false_split_correction_label": fsc,
                "false_merge_identification_label": fmi,
                "coord_key": COORD_KEY[sample_type],
                "coord_nm": coord,
                "timestamp": float(timestamp),
                "cutout_timestamp": float(cutout_timestamp),
                "geometry_roots": [str(r) for r in geometry_roots],
                "mask_a_root": str(mask_a),
                "mask_b_root": "" if mask_b is None else str(mask_b),
                "after_roots": [str(r) for r in after_roots],
                "priority": unit_interval("budget", chash),
                "metadata": dumps_metadata(full),
            }
        )


def _missing_columns(table: pa.Table, required: Iterable[str]) -> list[str]:
    return [c for c in required if c not in table.column_names]


def edit_point_nm(details: OperationDetails, resolution_nm: tuple[float, float, float]) -> np.ndarray | None:
    """Midpoint of the source centroid and the sink centroid, in nm; None when the op has no points."""
    centroids = [
        np.mean(np.asarray(pts, dtype=np.float64), axis=0)
        for pts in (details.source_coords_vx, details.sink_coords_vx)
        if len(pts)
    ]
    if not centroids:
        return None
    return np.mean(centroids, axis=0) * np.asarray(resolution_nm, dtype=np.float64)


def _change_log(source: Source, col: _Collector, roots: list[int]) -> pa.Table:
    """The roots' change-log rows; a root whose change log the server cannot give is ledgered (its edits and their
    adjacent controls are unknown: `change_log_unavailable` on `root:<id>`) and the others go on."""
    try:
        return source.change_log(roots)
    except PartlyUnavailable as partly:
        for root, gone in sorted(partly.unavailable.items()):
            col.fail(f"root:{root}", "merge_edit", gone.reason, describe(gone))
        return partly.result  # type: ignore[return-value]
    except Unavailable as gone:
        for root in roots:
            col.fail(f"root:{root}", "merge_edit", gone.reason, describe(gone))
        return _empty_log()


def _empty_log() -> pa.Table:
    return pa.table({c: [] for c in ("root_id", *CHANGE_LOG_COLUMNS)})


def _operations(log: pa.Table, col: _Collector) -> dict[int, dict]:
    """Change-log rows of proofread roots, deduplicated by operation id."""
    if log.num_rows == 0:
        return {}
    missing = _missing_columns(log, CHANGE_LOG_COLUMNS)
    if missing:
        col.fail("table:change_log", "merge_edit", "missing_column", f"table change_log has no column {missing[0]!r}")
        return {}
    ops: dict[int, dict] = {}
    for row in log.select(list(CHANGE_LOG_COLUMNS)).to_pylist():
        op_id = int(row["operation_id"])
        entry = {
            "timestamp": float(row["timestamp"]),
            "is_merge": bool(row["is_merge"]),
            "before": tuple(int(r) for r in row["before_root_ids"] or ()),
            "after": tuple(int(r) for r in row["after_root_ids"] or ()),
        }
        if op_id in ops:
            prev = ops[op_id]
            same = ("timestamp", "is_merge", "before")
            if any(prev[k] != entry[k] for k in same):
                prev["conflict"] = True
            else:  # a split in two roots' logs: each lists the after root of its own lineage (caveclient)
                prev["after"] += tuple(r for r in entry["after"] if r not in prev["after"])
            continue
        ops[op_id] = entry
    return ops


def _op_rows(source: Source, col: _Collector, ops: dict[int, dict], res: tuple[float, float, float]) -> None:
    if not ops:
        return
    try:
        details = source.operation_details(sorted(ops))
    except PartlyUnavailable as partly:
        details = partly.result  # type: ignore[assignment]
        for op_id, gone in sorted(partly.unavailable.items()):
            col.fail(f"operation:{op_id}", _kind(ops[op_id]), gone.reason, describe(gone))
        ops = {op: entry for op, entry in ops.items() if op not in partly.unavailable}
    except Unavailable as gone:
        for op_id in sorted(ops):
            col.fail(f"operation:{op_id}", _kind(ops[op_id]), gone.reason, describe(gone))
        return
    merges: list[tuple[int, np.ndarray]] = []
    for op_id in sorted(ops):
        entry = ops[op_id]
        kind = _kind(entry)
        sid = f"operation:{op_id}"
        if entry.get("conflict"):
            col.fail(sid, kind, "conflicting_duplicate_operation", "change log rows for this op disagree")
            continue
        det = details.get(op_id)
        if det is None:
            col.fail(sid, kind, "operation_details_missing", "get_operation_details returned nothing")
            continue
        point = edit_point_nm(det, res)
        if point is None:
            col.fail(sid, kind, "no_edit_point", "operation has neither source nor sink points")
            continue
        # a root's change log may list only the after roots in its own lineage; the op's details
        # list them all, so the longer list wins
        before = max(entry["before"], tuple(det.before_root_ids), key=len)
        det_after = tuple(det.after_root_ids)
        after = det_after if set(entry["after"]) <= set(det_after) else max(entry["after"], det_after, key=len)
        base_meta = {
            "operation_id": op_id,
            "is_merge": entry["is_merge"],
            "before_root_ids": [str(r) for r in before],
            "after_root_ids": [str(r) for r in after],
        }
        entry["before"], entry["after"] = before, after
        t = entry["timestamp"]
        if entry["is_merge"]:
            if len(before) != 2:
                col.fail(sid, kind, "root_count_mismatch", f"merge with {len(before)} before roots")
                continue
            a, b = before
            meta = {**base_meta, "strategy": "merge_correction"}
            col.add(kind, op_key(kind, op_id), point, t, t - 1, [a, b], a, b, [], meta)
            merges.append((op_id, point))
        else:
            if len(before) != 1 or len(after) != 2:
                col.fail(sid, kind, "root_count_mismatch", f"split with {len(before)} before, {len(after)} after")
                continue
            (c,), (a, b) = before, after
            meta = {**base_meta, "strategy": "split_correction"}
            col.add(kind, op_key(kind, op_id, a, b), point, t, t, [c], a, b, [a, b], meta)
    _adjacent_rows(source, col, ops, merges)


def _kind(entry: dict) -> str:
    return "merge_edit" if entry["is_merge"] else "split_edit"


def _in_threads(fn: Callable, items: list, threads: int) -> list:
    """fn over items on `threads` I/O threads, results (or the SampleError raised) in the items' order, so that a
    batch's rows and failures never depend on which answer came first."""

    def one(item):  # noqa: ANN001, ANN202
        try:
            return fn(item)
        except SampleError as exc:
            return exc

    if threads <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="cb2-bank") as pool:
        return list(pool.map(one, items))


def _adjacent_rows(source: Source, col: _Collector, ops: dict, merges: list[tuple[int, np.ndarray]]) -> None:
    """Adjacent controls of every merge op (the budget picks among them by hashed priority, like every type)."""
    cutouts = _in_threads(
        lambda m: source.segmentation_cutout(m[1], ADJACENT_CUTOUT_NM, ops[m[0]]["timestamp"] - 1),
        merges, col.cfg.bank_threads,
    )  # fmt: skip
    for (op_id, point), seg in zip(merges, cutouts, strict=True):
        entry = ops[op_id]
        t = entry["timestamp"]
        if isinstance(seg, SampleError):
            col.fail(f"operation:{op_id}", "adjacent_control", seg.reason, describe(seg))
            continue
        exclude = set(entry["before"]) | set(entry["after"])
        found = adjacent_roots(seg.data, list(entry["before"]), exclude)[: col.cfg.adjacent_per_op]
        for base, adj, _count in found:
            meta = {
                "source_operation_id": op_id,
                "operation_id": op_id,
                "is_merge": True,
                "before_root_ids": [str(r) for r in entry["before"]],
                "after_root_ids": None,  # a control has no after state (null in the release)
                "base_root": str(base),
                "adjacent_root": str(adj),
                "strategy": "merge_correction",
            }
            key = op_key("adjacent_control", op_id, base, adj)
            col.add("adjacent_control", key, point, t, t - 1, [base, adj], base, adj, [], meta)


def junction_points(vertices_nm: np.ndarray, edges: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Branch points (degree >= 3) of an undirected graph, as (point_nm, degree)."""
    if len(edges) == 0:
        return []
    degree = np.bincount(np.asarray(edges, dtype=np.int64).ravel(), minlength=len(vertices_nm))
    return [(np.asarray(vertices_nm[i], dtype=np.float64), int(degree[i])) for i in np.flatnonzero(degree >= 3)]


def _junction_rows(source: Source, col: _Collector, roots: list[int], as_of: float) -> None:
    cap = col.cfg.junctions_per_neuron
    for root, skel in zip(roots, _in_threads(source.skeleton, roots, col.cfg.bank_threads), strict=True):
        if isinstance(skel, SampleError):
            col.fail(f"root:{root}", "junction_control", skel.reason, describe(skel))
            continue
        points = junction_points(skel.vertices_nm, skel.edges)
        keyed = sorted(
            ((unit_interval("junction", junction_key(root, p)), junction_key(root, p), p, d) for p, d in points),
            key=lambda t: (t[0], t[1]),
        )[:cap]
        for _, key, point, degree in keyed:
            meta = {"root_id": str(root), "degree": float(degree)}  # a float, as in the release
            col.add("junction_control", key, point, as_of, as_of, [root], root, None, [], meta)


def _synapse_rows(col: _Collector, table: pa.Table, batch: set[int], proofread: set[int], as_of: float) -> None:
    """Synapses between two different proofread neurons, each in the batch of its pre root (a synapse with a null
    pre root in the batch of its post root), so every synapse is seen by exactly one batch."""
    missing = _missing_columns(table, SYNAPSE_COLUMNS)
    if missing:
        col.fail("table:synapses", "synapse_control", "missing_column", f"table synapses has no column {missing[0]!r}")
        return
    seen: set[int] = set()
    for row in table.to_pylist():
        syn_id = int(row["id"])
        sid = f"synapse:{syn_id}"
        pre, post = row["pre_pt_root_id"], row["post_pt_root_id"]
        owner = pre if pre is not None else post
        if syn_id in seen or owner is None or int(owner) not in batch:
            continue
        seen.add(syn_id)
        if pre is None or post is None or row["ctr_pt_position_nm"] is None:
            col.fail(sid, "synapse_control", "synapse_null_root_or_point", f"pre={pre} post={post}")
            continue
        pre, post = int(pre), int(post)
        if pre == post or post not in proofread:
            continue
        meta = {
            "synapse_id": syn_id,
            "pre_pt_root_id": str(pre),
            "post_pt_root_id": str(post),
            **{k: row.get(k) for k in col.nt_keys},
        }
        col.add("synapse_control", synapse_key(syn_id), row["ctr_pt_position_nm"], as_of, as_of, [pre, post], pre,
                post, [], meta)  # fmt: skip


def score_columns(synapses: pa.Table) -> tuple[str, ...]:
    """The table's scalar score columns that synapse rows carry (cleft_score, connection_score, neurotransmitter
    scores, ... where the table has them)."""
    skip = set(SYNAPSE_COLUMNS) | NON_SCORE_SYNAPSE_COLUMNS
    return tuple(sorted(f.name for f in synapses.schema if f.name not in skip and not pa.types.is_nested(f.type)))


def _synapses(source: Source, roots: list[int], proofread: list[int]) -> tuple[pa.Table | None, list[tuple]]:
    """Synapses from `roots` to proofread neurons, and (root, Unavailable) for the roots whose synapses the server
    could not give (None for the table when no synapse query could be made at all)."""
    try:
        return source.synapses(roots, proofread), []
    except PartlyUnavailable as partly:
        return partly.result, sorted(partly.unavailable.items())  # type: ignore[return-value]
    except Unavailable as gone:
        return None, [(root, gone) for root in roots]


def _batch_facts(source: Source, cfg: SpeciesConfig, roots: list[int]) -> tuple | BankResult:
    """(as_of, base resolution) for a batch, or the batch's result when the server cannot give them: every root
    ledgered unavailable (its partition seals; the next build retries it)."""
    try:
        return source.as_of(), source.base_resolution_nm()
    except Unavailable as gone:
        failures = [Failure(f"root:{r}", cfg.species, "merge_edit", STAGE, gone.reason, describe(gone)) for r in roots]
        return BankResult(failures=failures, log=_empty_log())


def _controls(
    col: _Collector, source: Source, junction_roots: list[int], synapse_roots: list[int], synapses: pa.Table | None,
    unavailable: list[tuple], proofread: list[int], as_of: float,
) -> None:  # fmt: skip
    """Junction controls of `junction_roots`, synapse controls whose pre root is in `synapse_roots`."""
    _junction_rows(source, col, junction_roots, as_of)
    for root, gone in unavailable:
        col.fail(f"root:{root}", "synapse_control", gone.reason, describe(gone))
    if synapses is not None:
        _synapse_rows(col, synapses, set(synapse_roots), {int(r) for r in proofread}, as_of)


def bank_candidates(source: Source, cfg: SpeciesConfig, batch: list[int], proofread: list[int]) -> BankResult:
    """Every candidate row one batch of proofread roots gives: its roots' edits (and their adjacent controls),
    junctions and outgoing synapses to any proofread neuron. No budget here: `select_bank` applies them. What a
    server cannot give is ledgered as unavailable on what it touches (`root:<id>`, `operation:<id>`), the rest
    goes on."""
    roots = sorted({int(r) for r in batch})
    facts = _batch_facts(source, cfg, roots)
    if isinstance(facts, BankResult):
        return facts
    as_of, res = facts
    synapses, unavailable = _synapses(source, roots, sorted({int(r) for r in proofread}))
    col = _Collector(cfg, score_columns(synapses) if synapses is not None else ())
    log = _change_log(source, col, roots)
    _op_rows(source, col, _operations(log, col), res)
    _controls(col, source, roots, roots, synapses, unavailable, proofread, as_of)
    col.result.rows.sort(key=lambda r: r["combined_sample_hash"])
    col.result.log = log
    return col.result


def retry_candidates(
    source: Source, cfg: SpeciesConfig, batch: list[int], proofread: list[int], rows: list[dict], log: pa.Table,
    failures: list[Failure],
) -> BankResult:  # fmt: skip
    """An earlier run's candidates of the batch (`rows`, its change-log rows `log`, its `failures`), with only
    what failed for the servers' sake asked again: the change logs of the roots ledgered so (merged into the
    batch's log, whose operations are rebuilt where the new rows touch them), the operations ledgered so, the
    junctions and synapses of the roots ledgered so. The rows equal what a run of the whole batch would give when
    every answer comes; nothing else is asked."""
    roots = sorted({int(r) for r in batch})
    retry = [f for f in failures if is_retryable(f.reason)]
    facts = _batch_facts(source, cfg, roots)
    if isinstance(facts, BankResult) or {f.sample_id for f in retry} >= {f"root:{r}" for r in roots}:
        return facts if isinstance(facts, BankResult) else bank_candidates(source, cfg, roots, proofread)
    as_of, res = facts
    of_type = {t: sorted({int(f.sample_id.split(":")[1]) for f in retry if f.sample_type in t
                          and f.sample_id.startswith("root:")}) for t in (OP_TYPES, ("junction_control",),
                                                                            ("synapse_control",))}  # fmt: skip
    edit_roots, junction_roots, synapse_roots = of_type.values()
    synapses, unavailable = _synapses(source, synapse_roots, sorted({int(r) for r in proofread}))
    nt_keys = score_columns(synapses) if synapses is not None else _nt_keys(rows)
    col = _Collector(cfg, nt_keys)
    if edit_roots:
        new_log = _change_log(source, col, edit_roots)
        log = pa.concat_tables([log, new_log.cast(log.schema)]) if log.num_rows else new_log
        log = log.sort_by([("root_id", "ascending"), ("timestamp", "ascending"), ("operation_id", "ascending")])
        touched = {int(o) for o in new_log.column("operation_id").to_pylist()} if new_log.num_rows else set()
    else:
        touched = set()
    touched |= {int(f.sample_id.split(":")[1]) for f in retry if f.sample_id.startswith("operation:")}
    ops = _operations(log, col)
    _op_rows(source, col, {op: entry for op, entry in ops.items() if op in touched}, res)
    _controls(col, source, junction_roots, synapse_roots, synapses, unavailable, proofread, as_of)
    redone = {f"root:{r}" for r in (*edit_roots, *junction_roots, *synapse_roots)} | {f"operation:{o}" for o in touched}
    kept_rows = [r for r in rows if _operation_of(r) not in touched]
    kept_failures = [f for f in failures if f not in retry and f.sample_id not in redone]
    merged = {r["combined_sample_hash"]: r for r in kept_rows}
    new = [r for r in col.result.rows if r["combined_sample_hash"] not in merged]
    merged.update({r["combined_sample_hash"]: r for r in new})
    result = BankResult(rows=[merged[h] for h in sorted(merged)], failures=kept_failures + col.result.failures,
                        log=log, kept=len(kept_rows))  # fmt: skip
    return result


def _operation_of(row: dict) -> int | None:
    """The operation a bank row comes from (edits and adjacent controls), else None."""
    if row["sample_type"] not in OP_TYPES:
        return None
    return int(json.loads(row["metadata"])["operation_id"])


def _nt_keys(rows: list[dict]) -> tuple[str, ...]:
    """The score keys the synapse rows of an earlier run carry (for rows of the same archive made now)."""
    plain = set(metadata_keys("synapse_control", (), rendered=False))
    for row in rows:
        if row["sample_type"] == "synapse_control":
            return tuple(sorted(set(json.loads(row["metadata"])) - plain))
    return ()


def row_digest(row: dict) -> str:
    """Digest of a bank row's content: a sample's downstream work is redone only when this changes."""
    return md5_hex(json.dumps({k: row[k] for k in sorted(row) if k != "row_digest"}, sort_keys=True))


def select_bank(candidates: list[dict], budgets: dict[str, int | None], species: str) -> BankResult:
    """`select_from_batches` of one batch of candidate rows."""
    return select_from_batches(lambda: [candidates], budgets, species)


def select_from_batches(
    batches: Callable[[], Iterable[list[dict]]], budgets: dict[str, int | None], species: str
) -> BankResult:
    """The bank: candidates of every batch, deduplicated (the same op can sit in two roots' histories), with
    per-type budgets keeping the rows of smallest hashed priority, never the first to arrive; sorted by hash.

    `batches()` yields the candidates batch by batch and is read twice: once to choose (keeping a few fields per
    candidate), once to keep the chosen rows. Memory follows the selected rows, not the candidates (at 20,000 roots,
    446,425 candidates held as rows took the selecting process to 2 GB). Rows of one archive share one metadata
    key set: a key some rows lack (a batch whose synapse table came back empty knows no neurotransmitter columns)
    is added to them as null. A hash met with two different contents is a failure, and neither is kept."""
    result = BankResult()
    seen: dict[str, tuple[str, float, str, str, frozenset]] = {}  # hash -> type, priority, archive, digest, keys
    interned: dict[frozenset, frozenset] = {}
    conflicts: set[str] = set()
    for batch in batches():
        for r in batch:
            h, digest = r["combined_sample_hash"], row_digest(r)
            if h in seen:
                if seen[h][3] != digest:
                    conflicts.add(h)
                continue
            keys = frozenset(json.loads(r["metadata"]))
            seen[h] = (r["sample_type"], r["priority"], r["source_archive"], digest, interned.setdefault(keys, keys))
    for h in sorted(conflicts):
        result.failures.append(Failure(h, species, seen.pop(h)[0], STAGE, "conflicting_duplicate_sample",
                                       "two batches built this sample with different content"))  # fmt: skip
    archive_keys: dict[str, set[str]] = {}
    for _, _, archive, _, keys in seen.values():
        archive_keys.setdefault(archive, set()).update(keys)
    chosen: set[str] = set()
    for sample_type in SAMPLE_TYPES:
        of_type = sorted((p, h) for h, (t, p, *_rest) in seen.items() if t == sample_type)
        budget = budgets[sample_type]
        chosen.update(h for _, h in (of_type if budget is None else of_type[:budget]))
    rows: dict[str, dict] = {}
    for batch in batches():
        for r in batch:
            h = r["combined_sample_hash"]
            if h not in chosen or h in rows:
                continue
            missing = archive_keys[r["source_archive"]] - seen[h][4]
            if missing:
                meta = json.loads(r["metadata"])
                r = {**r, "metadata": dumps_metadata({**meta, **dict.fromkeys(missing)})}
            rows[h] = r
    result.rows = [{**rows[h], "row_digest": row_digest(rows[h])} for h in sorted(rows)]
    return result


def candidate_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)


def bank_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=BANK_SCHEMA)
