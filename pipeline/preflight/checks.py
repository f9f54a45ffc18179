"""The checks: every assumption a build of a `source: cave` species makes about its servers, each asked once
through the same CaveSource code the build runs (so a check fails where the build would, with its message).

Order matters: a check names the checks it needs, and is skipped (not failed) when one of them did not pass,
so that one cause gives one FAIL line. A few proofread roots are chosen by hash (`root_digest`, as plan
does), never at random; the number of requests stays small (a few per check; the bisection at most 8).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import requests

from config.schema import SpeciesConfig
from core.errors import PartlyUnavailable, TransientSourceError, Unavailable, UserError
from pipeline.partitions import root_digest
from pipeline.preflight.batch import BatchProbe, largest_batch
from pipeline.preflight.report import FAIL, OK, SKIP, WARN, Check
from pipeline.sources.cave import CaveSource
from pipeline.sources.cave import meshes as cave_meshes
from pipeline.sources.cave.values import epoch, graphene_identity, https_url, uint64_list, utc
from pipeline.sources.cave.volumes import TimeoutAdapter
from pipeline.stages.fetch_sample import EM_FACTOR

REQUEST_BOUND = 500
SAMPLE_ROOTS = 3
DETAILS_PER_CHECK = 40  # operation ids asked in the operation-details check
L2_PROBE_IDS = 16  # level-2 ids of one root asked of the l2cache
BATCH_PROBE_REQUESTS = 8
BATCH_PROBE_CEILING = 4096  # ids: far past any URL limit of a real front server
REFUSALS = (413, 414, 431, 502, 503, 504)
_SHARDED_NAME = re.compile(r"~(\d+)/[^:]+:(\d+):(\d+)$")


class _Result(Exception):
    """A check's verdict other than ok, raised from inside it."""

    def __init__(self, status: str, found: str, action: str = "") -> None:
        super().__init__(found)
        self.status, self.found, self.action = status, found, action


@dataclass
class Findings:
    """What the checks found that later checks (and the report's limits) use."""

    roots: list[int] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    ops: dict[int, tuple[int, float, bool]] = field(default_factory=dict)  # op -> (root, time, is_merge)
    point_nm: np.ndarray | None = None
    em_res: tuple[float, ...] | None = None
    version_expires: float | None = None
    batch: BatchProbe | None = None
    batch_url_bytes: int = 0  # the longest operation-details URL answered
    l2_ids: dict[int, list[int]] = field(default_factory=dict)  # root -> its level-2 ids (the level-2 graph check)
    tracebacks: dict[str, str] = field(default_factory=dict)


class Preflight:
    def __init__(self, cfg: SpeciesConfig, source: CaveSource, now: float, workers: int, echo: Callable) -> None:
        self.cfg, self.src, self.now, self.workers, self.echo = cfg, source, float(now), workers, echo
        self.checks: list[Check] = []
        self.found = Findings()

    @property
    def _file(self) -> str:
        return f"config/{self.cfg.species}.yaml"

    # ------------------------------------------------------------------ running
    def run(self) -> list[Check]:
        self.src.session.probe(self.src.session.server)  # unreachable: one line, no report (as plan does)
        for name, fn, needs in self._plan():
            self._do(name, fn, needs)
        return self.checks

    def _plan(self) -> list[tuple[str, Callable[[], str], tuple[str, ...]]]:
        tables = [(f"table {key}", key) for key in ("proofread_table", "synapse_table") if getattr(self.cfg, key)]
        roots_need = ("access",) if self.cfg.proofread_from_delta_roots else ("table proofread_table",)
        return [
            ("token", self.token, ()),
            ("datastack", self.datastack, ()),
            ("access", self.access, ("datastack",)),
            ("version", self.version, ("access",)),
            *[(name, (lambda k=key: self.table(k)), ("version",)) for name, key in tables],
            ("proofread roots", self.proofread_roots, roots_need),
            ("change log", self.change_log, ("proofread roots",)),
            ("operation details", self.operation_details, ("change log",)),
            ("level-2 graph", self.level2_graph, ("proofread roots",)),
            ("l2cache", self.l2cache, ("level-2 graph",)),
            ("supervoxel -> root", self.supervoxel_root, ("change log",)),
            ("segmentation layer", self.seg_layer, ()),
            ("EM layer", self.em_layer, ()),
            ("mesh manifest", self.mesh_manifest, ("proofread roots", "segmentation layer")),
            ("operation-details batch", self.details_batch, ("change log",)),
            ("version expiry", self.version_expiry, ("version", "proofread roots", "EM layer")),
        ]

    def _do(self, name: str, fn: Callable[[], str], needs: tuple[str, ...]) -> None:
        status = {c.name: c.status for c in self.checks}
        blocked = [n for n in needs if status.get(n) in (FAIL, SKIP)]
        if blocked:
            check = Check(name, SKIP, f"not checked: {', '.join(blocked)} did not pass")
        else:
            try:
                check = Check(name, OK, fn())
            except _Result as r:
                check = Check(name, r.status, r.found, r.action)
            except UserError as exc:
                check = Check(name, FAIL, str(exc))
            except (TransientSourceError, Unavailable, PartlyUnavailable) as exc:  # answered nothing after resends
                check = Check(
                    name,
                    FAIL,
                    f"the server failed: {exc}",
                    "rerun; if it persists, send the recording (--record DIR) to the project",
                )
            except Exception as exc:  # noqa: BLE001 - a bug or a library's surprise: reported, traceback kept
                self.found.tracebacks[name] = traceback.format_exc()
                check = Check(
                    name,
                    FAIL,
                    f"unexpected {type(exc).__name__}: {str(exc)[:200]} (traceback in the JSON report)",
                    "send the report and the recording (--record DIR) to the project",
                )
        self.checks.append(check)
        self.echo(check.line())

    # ------------------------------------------------------------------ access
    def token(self) -> str:
        if self.src.session.token():
            return "present (explicit or CAVE_TOKEN; never printed)"
        secret = self.src.secret_file()
        if secret is not None:
            return f"present in {secret}, the file caveclient reads for this server (never printed)"
        from caveclient.auth import server_token_filename

        raise _Result(
            WARN,
            "no token found: only public endpoints will answer",
            f"set CAVE_TOKEN or write {server_token_filename(self.src.session.server)} (caveclient prefers it to "
            "cave-secret.json)",
        )

    def datastack(self) -> str:
        """The datastack's segmentation is graphene (a flat one has no chunkedgraph) and is seg_cloudpath's."""
        self.src.session.checked = True  # the start-up checks run as checks of their own (version)
        client = self.src.client()
        with self.src.session.guard("datastack info", self.src.session.server):
            source = client.info.segmentation_source()
        self.src.require_graphene(source)
        ours, theirs = graphene_identity(self.cfg.seg_cloudpath), graphene_identity(source or "")
        if ours is not None and theirs is not None and ours != theirs:
            raise _Result(
                FAIL,
                f"the datastack's segmentation is {source}, seg_cloudpath reads {self.cfg.seg_cloudpath}",
                f"point seg_cloudpath in {self._file} at the datastack's segmentation_source",
            )
        return f"'{self.cfg.datastack}': segmentation {source}, local server {client.local_server}"

    def access(self) -> str:
        """Calls that need the datastack's permission: the listed versions, one row of a configured table at the
        newest of them (materialization), the creation time of that row's root (chunkedgraph). The chunkedgraph
        client's own first request (`/segmentation/api/versions`) needs no permission: it proves nothing."""
        mat = self.src.materialization.client()
        with self.src.session.guard("materialization versions", self.src.session.local):
            stamps = {int(m["version"]): epoch(m["time_stamp"]) for m in mat.get_versions_metadata()}
        versions = sorted(stamps)
        cg = self.src.chunkedgraph.client()
        configured = [(self.cfg.proofread_table_name, "pt_root_id"), (self.cfg.synapse_table, "pre_pt_root_id")]
        table, column = next(((t, c) for t, c in configured if t), (None, None))
        if table is None or not versions:
            with self.src.session.guard("chunkedgraph oldest timestamp", self.src.session.local):
                cg.get_oldest_timestamp()
            return "materialization and chunkedgraph answer (no table to take a root from)"

        pinned = self.cfg.materialization_version
        version = pinned if pinned in versions else versions[-1]  # an expired pin is the version check's

        def one_row():  # noqa: ANN202
            return mat.query_table(table, materialization_version=version, limit=1, log_warning=False,
                                   split_positions=False, merge_reference=False, metadata=False)  # fmt: skip

        try:
            df = self.src.session.one("query", f"querying table '{table}'", self.src.session.local, one_row)
        except UserError as exc:
            if "refused access" in str(exc) or "terms of service" in str(exc):
                raise
            df = None  # the table itself is the table check's business; access asks the chunkedgraph alone
        roots = [] if df is None or column not in df.columns else [int(r) for r in df[column] if int(r)]
        if not roots:
            with self.src.session.guard("chunkedgraph oldest timestamp", self.src.session.local):
                cg.get_oldest_timestamp()
            return f"materialization answers; chunkedgraph answers (no root in '{table}' to ask about)"
        pinned_time, cg.timestamp = cg.timestamp, utc(stamps[version])  # asked at that version's time, not now
        try:
            self.src.session.one("root_timestamps", "chunkedgraph root timestamps", self.src.session.local,
                                 lambda: cg.get_root_timestamps(roots[:1]))  # fmt: skip
        except UserError as exc:
            if "not valid at timestamp" not in str(exc):
                raise
            # pcgv1 checks permission (auth_requires_permission) before a virtual table's cap (remap_public):
            # this 401 is the cap's, the token passed; the supervoxel -> root check says what the cap means
            return f"a row of '{table}' at version {version} answers; its root is past a public table's time cap"
        finally:
            cg.timestamp = pinned_time
        return (
            f"a row of '{table}' at version {version} and its root's creation time answer "
            "(token accepted, terms of service accepted, permission to view)"
        )

    def version(self) -> str:
        self.src.session.startup_checks()
        if self.cfg.materialization_version is None:
            return f"live queries at as_of {dt.datetime.fromtimestamp(float(self.cfg.as_of), dt.timezone.utc)}"
        mat = self.src.materialization.client()
        with self.src.session.guard("materialization version metadata", self.src.session.local):
            meta = mat.get_version_metadata(self.cfg.materialization_version)
        expires = meta.get("expires_on")
        self.found.version_expires = epoch(expires) if expires is not None else None
        return f"materialization_version {self.cfg.materialization_version} exists (expires {_day(expires)})"

    def table(self, key: str) -> str:
        table = self.cfg.proofread_table_name if key == "proofread_table" else getattr(self.cfg, key)
        mat = self.src.materialization.client()
        with self.src.session.guard("materialization tables", self.src.session.local):
            tables = sorted(mat.get_tables(version=self.cfg.materialization_version))
        if table not in tables:
            raise _Result(
                FAIL,
                f"'{table}' is not a table at version {self.cfg.materialization_version} "
                f"(tables: {', '.join(tables) or 'none'})",
                f"set {key} in {self._file}",
            )
        present = self.src.materialization.columns(table)
        try:
            self.src.check_columns(key, table, present)
        except UserError as exc:
            raise _Result(FAIL, str(exc), f"set {key} to a table with those columns") from None
        return f"'{table}' has the columns the build reads ({len(present)} columns)"

    def l2cache(self) -> str:
        """The cache asked as the build asks it: representative points of a sample root's level-2 ids
        (Level2.coords, l2cache.py, whose answer decides the build's skeletons), never `has_cache()`, which misses a
        public virtual table's cache."""
        root = next((r for r in self.found.chosen if self.found.l2_ids.get(r)), None)
        if root is None:
            raise _Result(WARN, f"the level-2 graphs of {len(self.found.chosen)} roots are empty: nothing to ask")
        ids = self.found.l2_ids[root][:L2_PROBE_IDS]
        coords = self.src.level2.coords(ids)
        self.src.level2.has_cache = coords is not None  # the build's decision, as this source would make it
        if coords is not None and coords:
            return f"available: {len(coords)} of {len(ids)} level-2 ids of root {root} have a representative point"
        if coords is not None:
            raise _Result(
                WARN,
                f"the cache answers but has no point for any of {len(ids)} level-2 ids of root {root}: nodes it "
                "has not computed are left out of the skeletons",
            )
        what = (
            "none for this datastack (the cache says so): the build places each level-2 node at its chunk's "
            "centre, so junction controls sit up to half a chunk off the branch point"
        )
        if self.cfg.budgets.junction_control == 0:
            raise _Result(WARN, what + " (junction controls are off: budgets.junction_control is 0)")
        raise _Result(
            FAIL, what, f"set budgets.junction_control: 0 in {self._file}, or use a datastack with an l2cache"
        )

    # ------------------------------------------------------------------ a few roots
    def proofread_roots(self) -> str:
        roots = self.src.proofread_roots()
        if not roots:
            key = "proofread_from_delta_roots" if self.cfg.proofread_from_delta_roots else "proofread_table"
            raise _Result(FAIL, "no proofread roots", f"check {key} in {self._file}")
        self.found.roots = roots
        self.found.chosen = sorted(roots, key=root_digest)[:SAMPLE_ROOTS]
        same = self.cfg.proofread_root_must_equal
        left = f" ({self.src.rows_not_proofread} rows left out: pt_root_id is not their {same})" if same else ""
        return f"{len(roots)} roots{left}; checking {', '.join(map(str, self.found.chosen))} (chosen by hash)"

    def change_log(self) -> str:
        log = self.src.change_log(self.found.chosen)
        rows = log.to_pylist()
        self.found.ops = {r["operation_id"]: (r["root_id"], r["timestamp"], r["is_merge"]) for r in rows}
        merges = sum(r["is_merge"] for r in rows)
        if not rows:
            raise _Result(WARN, f"no edits before as_of for {len(self.found.chosen)} roots (no edit samples from them)")
        return f"{len(rows)} edits ({merges} merges, {len(rows) - merges} splits) for {len(self.found.chosen)} roots"

    def operation_details(self) -> str:
        ops = sorted(self.found.ops)[:DETAILS_PER_CHECK]
        if not ops:
            raise _Result(WARN, "no operations to ask for")
        got = self.src.operation_details(ops)
        with_points = sum(bool(d.source_coords_vx or d.sink_coords_vx) for d in got.values())
        for d in got.values():
            coords = d.source_coords_vx or d.sink_coords_vx
            if coords and self.found.point_nm is None:
                res = np.asarray(self.src.base_resolution_nm())
                self.found.point_nm = np.asarray(coords[0], dtype=np.float64) * res
        if not got:
            raise _Result(FAIL, f"none of {len(ops)} operations has details", "send the recording to the project")
        if not with_points:
            raise _Result(
                WARN,
                f"{len(got)} of {len(ops)} operations answered, none with source / sink points "
                "(edit samples need them)",
            )
        return f"{len(got)} of {len(ops)} operations answered, {with_points} with points"

    def level2_graph(self) -> str:
        cg = self.src.chunkedgraph.client()
        nodes, edges, branch = 0, 0, 0
        for root in self.found.chosen:
            graph = self.src.session.one("level2_graph", "chunkedgraph level-2 graph", self.src.session.local,
                                         lambda root=root: cg.level2_chunk_graph(int(root)))  # fmt: skip
            pairs = np.asarray(graph, dtype=np.uint64).reshape(-1, 2)
            ids, degree = np.unique(pairs, return_counts=True)
            self.found.l2_ids[root] = [int(v) for v in ids]
            nodes, edges, branch = nodes + ids.size, edges + len(pairs), branch + int((degree >= 3).sum())
        cycles = edges - nodes + len(self.found.chosen)  # independent cycles if each graph is connected
        return f"{nodes} nodes, {edges} edges, {branch} with 3+ neighbours, ~{max(cycles, 0)} cycles"

    def supervoxel_root(self) -> str:
        """Roots come back as of the time asked, not of another: a public virtual table clamps later timestamps to
        its release without an error (PyChunkedGraph pcgv1 app_utils.remap_public, ceiling_timestamp), so a build
        pinned after the release would read every root at the release, and no 401 says so. Asked three ways:
        the latest edit's supervoxels map to its after roots at its own time; the proofread table's rows at the
        pinned version (a supervoxel and its root then) map so at as_of; and every root answered at as_of was
        created by then (root timestamps <= as_of)."""
        as_of = self.src.as_of()
        op = max(self.found.ops, key=lambda o: (self.found.ops[o][1], o))  # the latest edit: past a cap first
        cg = self.src.chunkedgraph.client()
        details = self.src.session.one("operation_details", "chunkedgraph operation details", self.src.session.local,
                                       lambda: cg.get_operation_details([op]))  # fmt: skip
        det = details.get(str(op)) or {}
        edges = det.get("added_edges") or det.get("removed_edges") or []
        svs = np.unique(np.asarray(edges, dtype=np.uint64).ravel())
        if svs.size == 0:
            raise _Result(WARN, f"operation {op} lists no edited supervoxels")
        t_op = self.found.ops[op][1]
        at_edit = self.src.roots_at(svs, t_op)
        after = set(uint64_list(det.get("roots")))
        if not set(int(r) for r in at_edit) <= after:
            raise _Result(
                FAIL,
                f"at operation {op}'s time ({_day(t_op)}) its supervoxels map to {sorted(set(at_edit.tolist()))}, "
                f"not to its after roots {sorted(after)}: the server answers roots as of an earlier time than "
                "asked (a public table capped at its release clamps later times silently)",
                f"pin materialization_version / as_of in {self._file} at or before the datastack's public release",
            )
        known = self._known_roots()
        asked = np.concatenate([svs, np.asarray(list(known), dtype=np.uint64)])
        now = self.src.roots_at(asked, as_of)
        if not (now != 0).all():
            raise _Result(FAIL, f"supervoxels {asked.tolist()} have no root at as_of", "send the recording")
        wrong = {sv: (root, int(got)) for (sv, root), got in zip(known.items(), now[svs.size :], strict=True)
                 if int(got) != root}  # fmt: skip
        if wrong:
            sv, (root, got) = next(iter(wrong.items()))
            raise _Result(
                FAIL,
                f"at as_of ({_day(as_of)}) supervoxel {sv} maps to {got}, not to {root}, its root in "
                f"'{self.cfg.proofread_table_name}' at the pinned version ({len(wrong)} of {len(known)} such): the "
                "server answers roots as of another time than asked (a public table capped at its release clamps "
                "later times silently)",
                f"pin materialization_version / as_of in {self._file} at or before the datastack's public release",
            )
        roots = sorted({int(r) for r in now})
        # at as_of: the source pins the chunkedgraph's default time (Chunkedgraph.pin)
        stamps = self.src.session.one("root_timestamps", "chunkedgraph root timestamps", self.src.session.local,
                                      lambda: cg.get_root_timestamps(roots))  # fmt: skip
        late = [r for r, t in zip(roots, stamps, strict=True) if epoch(t) > as_of + 0.001]
        if late:
            raise _Result(
                FAIL,
                f"roots {late[:3]} answered at as_of ({_day(as_of)}) were created after it: the server reads "
                "another time than asked",
                "send the recording to the project",
            )
        told = f", {len(known)} proofread rows' roots" if known else ""
        return (
            f"{svs.size} supervoxels of operation {op} map to its after roots at its time; at as_of{told} as "
            f"pinned, {len(roots)} roots all created by then"
        )

    def _known_roots(self) -> dict[int, int]:
        """supervoxel -> root of the chosen proofread roots' rows in the proofread table at the pinned time (a root
        known then), when the table has its supervoxels; {} otherwise (delta-roots species)."""
        table = self.cfg.proofread_table_name
        mat = self.src.materialization
        if not table or self.cfg.proofread_from_delta_roots or "pt_supervoxel_id" not in mat.columns(table):
            return {}
        df = mat.query(table, filter_in_dict={"pt_root_id": self.found.chosen},
                       select_columns=["pt_supervoxel_id", "pt_root_id"])  # fmt: skip
        return {int(sv): int(r) for sv, r in zip(df["pt_supervoxel_id"], df["pt_root_id"], strict=True) if int(sv)}

    # ------------------------------------------------------------------ volumes
    def _layer(self, cv, mip: int, key: str) -> str:  # noqa: ANN001
        meta = cv.meta
        res = [float(v) for v in meta.resolution(mip)]
        scales = len(meta.info["scales"])
        chunk = [int(v) for v in meta.chunk_size(mip)]
        offset = [int(v) for v in meta.voxel_offset(mip)]
        size = [int(v) for v in meta.volume_size(mip)]
        return (
            f"{meta.layer_type} {meta.dtype}, {scales} scale(s); {key} {mip}: {'x'.join(f'{v:g}' for v in res)} "
            f"nm, chunk {chunk}, voxel offset {offset}, size {size}"
        )

    def _centre(self) -> np.ndarray:
        if self.found.point_nm is not None:
            return self.found.point_nm
        lo, hi = self.src.canonical_bbox_nm()
        return (np.asarray(lo) + np.asarray(hi)) / 2.0

    def seg_layer(self) -> str:
        seg = self.src.volumes.seg()
        text = self._layer(seg, self.cfg.seg_mip, "seg_mip")
        res = np.asarray(seg.meta.resolution(self.cfg.seg_mip), dtype=np.float64)
        url = https_url(self.cfg.seg_cloudpath)
        cut = self.src.volumes.cutout(seg, self.cfg.seg_mip, self._centre(), float(res.min()), "segmentation chunk",
                                      url)  # fmt: skip
        return text + f"; a chunk read back ({_absent(cut.missing)})"

    def em_layer(self) -> str:
        em = self.src.volumes.em()
        text = self._layer(em, self.cfg.em_mip, "em_mip")
        self.found.em_res = tuple(float(v) for v in em.meta.resolution(self.cfg.em_mip))
        cut = self.src.em_cutout(self._centre(), float(min(self.found.em_res)))
        return text + f"; a chunk read back ({_absent(cut.missing)})"

    def mesh_manifest(self) -> str:
        seg = self.src.volumes.seg()
        meta = seg.meta
        sharded = bool(self._mesh_info(seg).get("sharding"))
        draco = (meta.info.get("mesh_metadata") or {}).get("uniform_draco_grid_size")
        layers: dict[int, int] = {}
        fragments, nbytes = 0, 0
        bounded, kept = 0, 0
        s = self.src.session
        for root in self.found.chosen:
            url = https_url(self.cfg.seg_cloudpath)
            bbox = self._mesh_box(seg, root)  # as the build asks (Meshes.mesh): bounds in mip-0 voxels
            manifest = s.one("manifest", f"mesh manifest of {root}", url,
                             lambda root=root, bbox=bbox: cave_meshes.fetch_manifest(s.http(), seg, root, bbox,
                                                                                     s.timeout))  # fmt: skip
            names = (manifest or {}).get("fragments") or []
            if bbox is not None:
                bounded += 1
                origin = np.asarray(meta.voxel_offset(0) if meta.chunks_start_at_voxel_offset else (0, 0, 0))
                kept += len(cave_meshes.filter_manifest(manifest or {"fragments": []}, bbox,
                                                        origin.astype(np.int64))["fragments"])  # fmt: skip
            fragments += len(names)
            if names and not _SHARDED_NAME.search(names[0]):  # unsharded: the bytes of one fragment per root
                nbytes += self._fragment_bytes(seg, names[0])
            for name in names:
                m = _SHARDED_NAME.search(name)
                layer = int(m.group(1)) if m else int(meta.decode_layer_id(int(name.split(":")[0])))
                layers[layer] = layers.get(layer, 0) + 1
                nbytes += int(m.group(3)) if m else 0
        if not fragments:
            raise _Result(
                FAIL,
                f"no mesh fragments listed for {len(self.found.chosen)} proofread roots",
                "check seg_cloudpath's mesh source; send the recording to the project",
            )
        layer_text = ", ".join(f"layer {k}: {v}" for k, v in sorted(layers.items()))
        what = "listed" if sharded else f"in {len(self.found.chosen)} fragments read (one per root)"
        size = f", {nbytes / 1e3:.1f} KB {what}" if nbytes else ""
        boxes = f" listed for {bounded} roots' boxes ({kept} meet the boxes)" if bounded else ""
        return (
            f"{fragments} fragments{boxes} ({layer_text}){size}; {'sharded' if sharded else 'unsharded'}, "
            f"{'Draco grid ' + format(draco, 'g') + ' nm' if draco else 'not Draco'}"
        )

    def _mesh_box(self, seg, root: int):  # noqa: ANN001, ANN202 - a cloud-volume Bbox or None
        """The box a sample of `root` would fetch (fetch_sample.crop_box_half_nm around a point of the root: its
        first level-2 node's chunk centre), in mip-0 voxels as Meshes.mesh sends it; None when the root's
        level-2 graph is not known (the whole manifest is asked then)."""
        from pipeline.stages.fetch_sample import crop_box_half_nm

        ids = self.found.l2_ids.get(root)
        if not ids:
            return None
        centre = np.asarray(self.src.volumes.chunk_centres(np.asarray(ids[:1], dtype=np.uint64))[int(ids[0])])
        half = crop_box_half_nm(self.cfg)
        bounds = seg.meta.bounds(0)
        return cave_meshes.box_to_voxels((centre - half, centre + half), seg.meta.resolution(0),
                                         self.src.limits.mesh_pad_nm, bounds.minpt, bounds.maxpt)  # fmt: skip

    def _fragment_bytes(self, seg, name: str) -> int:  # noqa: ANN001
        info = seg.meta.info
        url = https_url(str(info.get("data_dir", ""))).rstrip("/") + f"/{info.get('mesh', 'mesh')}/{name}"
        with self.src.session.guard("mesh fragment", url):
            resp = self.src.session.http().get(url, timeout=self.src.session.timeout)
            resp.raise_for_status()
            return len(resp.content)

    def _mesh_info(self, seg) -> dict:  # noqa: ANN001
        """The mesh directory's own info (its `sharding` says whether fragments are sharded)."""
        info = seg.meta.info
        url = https_url(str(info.get("data_dir", ""))).rstrip("/") + f"/{info.get('mesh', 'mesh')}/info"
        with self.src.session.guard("mesh info", url):
            resp = self.src.session.http().get(url, timeout=self.src.session.timeout)
            if resp.status_code == 404:
                return {}
            resp.raise_for_status()
            return resp.json()

    # ------------------------------------------------------------------ limits
    def details_batch(self) -> str:
        cg = self.src.chunkedgraph.client()
        base = cg._endpoints["operation_details"].format_map(cg.default_url_mapping)
        known = sorted(self.found.ops)
        start = self.src.limits.operation_details_batch  # where the adaptive source starts; it halves on refusals

        session = _probe_session(cg.session, self.src.session.timeout)

        def once(url: str) -> bool | requests.Response:
            try:
                resp = session.get(url, timeout=self.src.session.timeout)
            except requests.RequestException:  # a reset or a timeout: refused
                return False
            return False if resp.status_code in REFUSALS else resp

        def accepts(n: int) -> bool:
            """One request of n ids; a refusal is asked once more (a transient 502 is not a limit)."""
            url = operation_details_url(base, _op_ids(known, n))
            resp = once(url) or once(url)
            if resp is False:
                return False
            with self.src.session.guard("chunkedgraph operation details", self.src.session.local):
                resp.raise_for_status()
            return True

        probe = largest_batch(accepts, start, BATCH_PROBE_CEILING, BATCH_PROBE_REQUESTS)
        self.found.batch = probe
        url_ok = len(operation_details_url(base, _op_ids(known, probe.largest_ok))) if probe.largest_ok else 0
        self.found.batch_url_bytes = url_ok
        text = f"{probe.text()}; the build starts at {start} ids and learns the rest"
        if probe.largest_ok < start:
            halvings = math.ceil(math.log2(start / max(1, probe.largest_ok)))
            raise _Result(
                WARN,
                text + f"; the largest URL answered is {url_ok} bytes: the build's first batches are refused and "
                f"halved ~{halvings} times per worker before they pass (CaveLimits.operation_details_batch)",
            )
        return text + f"; largest URL answered {url_ok} bytes"

    def version_expiry(self) -> str:
        from pipeline.plan import estimate_cost

        if self.found.version_expires is None:
            return "live queries (as_of): nothing expires"
        rows = estimated_rows(self.cfg, len(self.found.roots), self.found.ops, len(self.found.chosen))
        voxels = math.prod(max(1, round(EM_FACTOR * self.cfg.em_window_nm / v)) for v in self.found.em_res)
        _, _, hours = estimate_cost(rows, voxels, self.workers, self.cfg.fetch_threads)
        end = self.now + hours["fetch_render"] * 3600.0
        text = (
            f"materialization_version {self.cfg.materialization_version} expires {_day(self.found.version_expires)}; "
            f"plan's estimate: ~{rows:,} rows, {hours['fetch_render']:.2f} h fetch+render with {self.workers} workers"
        )
        if self.found.version_expires <= end:
            raise _Result(
                FAIL,
                text + ": it expires before the build ends",
                f"pin a later materialization_version in {self._file}, or build with more workers",
            )
        if self.found.version_expires <= end + 7 * 86400.0:
            raise _Result(WARN, text + ": less than a week to spare")
        return text


def estimated_rows(cfg: SpeciesConfig, n_roots: int, ops: dict[int, tuple[int, float, bool]], sampled: int) -> int:
    """Rows of a build, per type from the sampled roots' edits scaled to every root, capped by the budgets
    (synapse controls: one per root, a stand-in; `plan --species` counts them)."""
    scale = n_roots / max(sampled, 1)
    merges = sum(1 for _, _, m in ops.values() if m) * scale
    splits = (len(ops) * scale) - merges
    counts = {
        "merge_edit": merges,
        "split_edit": splits,
        "adjacent_control": merges * cfg.adjacent_per_op,
        "junction_control": n_roots * cfg.junctions_per_neuron,
        "synapse_control": float(n_roots),
    }
    budgets = cfg.budgets.model_dump()
    return int(sum(v if budgets[t] is None else min(v, budgets[t]) for t, v in counts.items()))


def _probe_session(client_session: requests.Session, timeout: tuple[float, float]) -> requests.Session:
    """The client's headers (its token) on a session that never retries: each probe is the request it counts."""
    session = requests.Session()
    session.headers.update(client_session.headers)
    session.cookies.update(client_session.cookies)
    adapter = TimeoutAdapter(timeout, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def operation_details_url(base_url: str, ids: list[int]) -> str:
    """The URL caveclient's get_operation_details requests (urlencode of the id list's str)."""
    return base_url + "?" + urllib.parse.urlencode({"operation_ids": [int(i) for i in ids]})


def _op_ids(known: list[int], n: int) -> list[int]:
    """n operation ids: the known ones, then the ids just below the largest (operation ids are a counter)."""
    top = max(known) if known else n
    out = list(known[:n])
    seen = set(out)
    candidate = top
    while len(out) < n and candidate > 0:
        if candidate not in seen:
            out.append(candidate)
        candidate -= 1
    return sorted(out)


def _absent(missing: np.ndarray | None) -> str:
    frac = float(np.mean(missing)) if missing is not None and missing.size else 0.0
    return "present" if frac == 0 else f"{frac:.0%} of it from absent chunks"


def _day(value: object) -> str:
    if value is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch(value), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
