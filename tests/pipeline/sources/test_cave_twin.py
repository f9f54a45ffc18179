"""CaveSource against the twin (both server generations), and against DemoSource on the same world.

The real caveclient and cloud-volume talk HTTP to the twin, which serves the tiny demo world as CAVE
and a graphene segmentation with the real servers' limits on. What DemoSource reads from the files,
CaveSource must read through the servers: the same roots, history, synapses and junctions, identical
EM and segmentation cutouts, and meshes equal up to the Draco quantization.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial import cKDTree

from config.schema import load_config
from core.errors import SampleError, Unavailable, UserError
from pipeline.sources.base import CHANGE_LOG_COLUMNS, SYNAPSE_COLUMNS, Source
from pipeline.sources.cave import CaveSource
from pipeline.sources.cave.limits import CaveLimits
from pipeline.sources.cave.tables import CapWatch
from pipeline.sources.demo import DemoSource
from pipeline.sources.retrying import RetryingSource
from pipeline.stages.bank_candidates import junction_points
from pipeline.stages.fetch_meshes import PartitionMeshes
from pipeline.stages.fetch_sample import crop_box_half_nm, fetch_sample
from render.geometry import crop_mesh
from sim.twin import TOKEN, ids
from sim.twin.species import twin_config
from tests.pipeline.fakes import build_bank


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs):
    return load_config("demo", tiny_configs)


@pytest.fixture(scope="module")
def demo(demo_cfg, twin_world):
    return DemoSource(demo_cfg, twin_world)


@pytest.fixture()
def make(twin, demo_cfg):
    def make_source(limits: CaveLimits | None = None, **overrides) -> CaveSource:
        return CaveSource(twin_config(demo_cfg, twin.url, **overrides), token=TOKEN, limits=limits)

    return make_source


@pytest.fixture()
def cave(make):
    return make()


def _summary(twin_world) -> dict:
    return json.loads((twin_world / "world.json").read_text())


def _within_limits(twin, since: int = 0) -> None:
    """Nothing the source sent broke a limit: no 414, no 504, no URL over the limit."""
    records = twin.requests[since:]
    assert records, "no requests were made"
    assert all(r.status not in (414, 504) for r in records), [(r.path, r.status) for r in records if r.status >= 400]
    assert max(r.url_bytes for r in records) <= twin.limits.url_bytes


# ---------------------------------------------------------------- the same world, through the servers
def test_is_a_source_with_the_same_volume(cave, demo):
    assert isinstance(cave, Source)
    assert cave.base_resolution_nm() == demo.base_resolution_nm()
    assert cave.canonical_bbox_nm() == demo.canonical_bbox_nm()
    assert cave.as_of() == demo.as_of()  # the twin's latest version is the world's as_of


def test_roots_history_and_details_match_demo(cave, demo, twin):
    n = len(twin.requests)
    roots = cave.proofread_roots()
    assert roots == demo.proofread_roots()
    log, demo_log = cave.change_log(roots), demo.change_log(roots)
    assert log.column_names[: len(CHANGE_LOG_COLUMNS)] == list(CHANGE_LOG_COLUMNS)

    def key(row: dict) -> tuple:
        return (row["root_id"], row["operation_id"], row["timestamp"], row["is_merge"], tuple(row["before_root_ids"]))

    assert sorted(map(key, log.to_pylist())) == sorted(map(key, demo_log.to_pylist()))
    demo_after = {(r["root_id"], r["operation_id"]): set(r["after_root_ids"]) for r in demo_log.to_pylist()}
    for row in log.to_pylist():  # the server lists the after root in the queried lineage
        assert set(row["after_root_ids"]) <= demo_after[(row["root_id"], row["operation_id"])]
    ops = sorted(set(log["operation_id"].to_pylist()))
    got, want = cave.operation_details(ops), demo.operation_details(ops)
    assert set(got) == set(want) == set(ops)
    for op in ops:
        a, b = got[op], want[op]
        assert (a.timestamp, a.is_merge, a.before_root_ids) == (b.timestamp, b.is_merge, b.before_root_ids)
        assert set(a.after_root_ids) == set(b.after_root_ids)
        assert (a.source_coords_vx, a.sink_coords_vx) == (b.source_coords_vx, b.sink_coords_vx)
    _within_limits(twin, n)


def test_details_alone_give_the_edit_time_not_the_log_row_time(make, demo, twin):
    """A fresh worker (no change log seen): on v1 the details' timestamp is the log row's later write
    time; the edit's own time comes from its after roots, and the before roots are resolved just before it."""
    cave = make()
    ops = sorted(demo.operation_details([int(o) for o in demo._table("operations")["operation_id"].to_pylist()]))
    got, want = cave.operation_details(ops), demo.operation_details(ops)
    for op in ops:
        assert got[op].timestamp == want[op].timestamp
        assert set(got[op].before_root_ids) == set(want[op].before_root_ids)


def test_synapses_and_junctions_match_demo(cave, demo, twin):
    roots = demo.proofread_roots()
    got, want = cave.synapses(roots, roots), demo.synapses(roots, roots)
    assert got.column_names[: len(SYNAPSE_COLUMNS)] == list(SYNAPSE_COLUMNS)
    assert {"gaba", "ach", "glut", "oct", "ser", "da"} <= set(got.column_names)
    cols = [*SYNAPSE_COLUMNS, "gaba", "da"]
    assert got.select(cols).to_pylist() == want.select(cols).sort_by("id").to_pylist()
    found = 0
    for root in roots[:6]:
        a, b = cave.skeleton(root), demo.skeleton(root)
        assert a.extra["coords"] == "l2cache"
        ja = sorted(tuple(p) + (d,) for p, d in junction_points(a.vertices_nm, a.edges))
        jb = sorted(tuple(p) + (d,) for p, d in junction_points(b.vertices_nm, b.edges))
        assert ja == jb
        found += len(ja)
    assert found


def test_cutouts_identical(cave, demo):
    ops = demo.operation_details([int(o) for o in demo._table("operations")["operation_id"].to_pylist()])
    res = np.array(demo.base_resolution_nm())
    for op in [o for o in ops.values() if o.source_coords_vx][:3]:
        point = np.asarray(op.source_coords_vx[0]) * res
        a, b = cave.em_cutout(point, 1800.0), demo.em_cutout(point, 1800.0)
        assert np.array_equal(a.data, b.data) and a.origin_nm == b.origin_nm and a.voxel_nm == b.voxel_nm
        for t in (op.timestamp - 1, op.timestamp):
            s, d = cave.segmentation_cutout(point, 900.0, t), demo.segmentation_cutout(point, 900.0, t)
            assert np.array_equal(s.data, d.data)
        assert not np.array_equal(  # the edit is seen: before and after differ
            cave.segmentation_cutout(point, 900.0, op.timestamp - 1).data,
            cave.segmentation_cutout(point, 900.0, op.timestamp).data,
        )


def _close(a, b, tol: float) -> bool:
    """Every vertex of each mesh within `tol` of the other's (faces may be re-split across fragments)."""
    if len(a.vertices) == 0 or len(b.vertices) == 0:
        return len(a.vertices) == len(b.vertices)
    da, _ = cKDTree(b.vertices).query(a.vertices)
    db, _ = cKDTree(a.vertices).query(b.vertices)
    return bool(da.max() <= tol and db.max() <= tol)


def test_meshes_equal_up_to_draco_quantization(cave, demo, twin, twin_world):
    bin_nm = twin.cache_summary["draco_bin_nm"]
    tol = bin_nm / 2 * np.sqrt(3) + 1e-3
    missing = set(_summary(twin_world)["defects"]["roots_without_mesh"])
    with_mesh = [r for r in demo.proofread_roots() if r not in missing]
    roots = [_summary(twin_world)["long_neurons"][0]["root_id"], *with_mesh[:3]]
    for root in roots:
        a, b = cave.mesh(root), demo.mesh(root)
        assert len(a.faces) == len(b.faces)
        assert _close(a, b, tol)
        assert abs(a.area - b.area) / b.area < 0.01


def test_bounded_fetch_reads_only_the_box(cave, demo, twin, twin_world):
    """A box on the long neuron: both flavours download only fragments whose chunks the box touches
    (v2: the server filters; v1: the client filters the names the server lists), and the result holds
    every face a sample's crop keeps."""
    root = _summary(twin_world)["long_neurons"][0]["root_id"]
    whole = demo.mesh(root)
    center = whole.vertices[len(whole.vertices) // 3]
    half = 3439.0
    n = len(twin.requests)
    part = cave.mesh(root, box_nm=(center - half, center + half))
    got = twin.requests[n:]
    (manifest,) = [r for r in got if "/manifest/" in r.path]
    assert "bounds=" in manifest.query
    frag_bytes = sum(r.bytes_sent for r in got if "_meshes/" in r.path)
    total = int(sum(twin.world.frag_bytes[i] for i in twin.world.fragment_rows(root)))
    assert 0 < frag_bytes < total / 4
    # quantization moves vertices by up to half a bin: compare crops a bin apart, one inside the other
    bin_nm = twin.cache_summary["draco_bin_nm"]
    outer, inner = crop_mesh(part, center, half + bin_nm), crop_mesh(whole, center, half - bin_nm)
    assert len(outer.faces) >= len(inner.faces) > 1000
    dist, _ = cKDTree(outer.vertices).query(inner.vertices)
    assert dist.max() <= bin_nm
    # exactly the fragments whose level-2 chunk touches the padded box were read
    res = np.asarray(cave.base_resolution_nm())
    pad = cave.limits.mesh_pad_nm
    lo_vx, hi_vx = np.floor((center - half - pad) / res), np.ceil((center + half + pad) / res)
    touching = [
        i for i in twin.world.fragment_rows(root)
        if (ids.chunk_box_vx(twin.world.frag_chunk[i])[0] < hi_vx).all()
        and (ids.chunk_box_vx(twin.world.frag_chunk[i])[1] > lo_vx).all()
    ]  # fmt: skip
    reads = [r for r in got if "_meshes/" in r.path and not r.path.endswith("/info")]
    assert len(reads) == len(touching) > 0
    if twin.flavor == "v1":
        assert sorted(r.path.rsplit("/", 1)[-1] for r in reads) == sorted(twin.world.frag_v1[i] for i in touching)
    else:
        assert all(r.status == 206 and "/initial/2/" in r.path for r in reads)  # byte ranges of shard files


def test_mesh_outside_the_box_is_empty_and_absent_mesh_is_missing(cave, twin_world):
    s = _summary(twin_world)
    root = s["long_neurons"][0]["root_id"]
    far = np.array(s["geometry"]["bbox_nm"][0]) + 1000.0
    assert len(cave.mesh(root, box_nm=(far, far + 500.0)).faces) == 0
    for missing in s["defects"]["roots_without_mesh"]:
        with pytest.raises(SampleError) as err:
            cave.mesh(missing)
        assert err.value.reason == "missing_mesh"
        with pytest.raises(SampleError):
            cave.mesh(missing, box_nm=(far, far + 500.0))


def test_other_mesh_errors_are_not_missing_mesh(cave, twin, twin_world, monkeypatch):
    root = _summary(twin_world)["long_neurons"][0]["root_id"]
    seg = cave._seg()
    monkeypatch.setattr(seg.mesh, "get", lambda *a, **k: {}.__getitem__("boom"))
    with pytest.raises(KeyError):
        cave.mesh(root)
    monkeypatch.undo()
    # the manifest lists one fragment, which the bucket does not have
    rows = twin.world._frag_rows[root]
    i = rows[0]
    names = twin.world.frag_v1 if twin.flavor == "v1" else twin.world.frag_v2
    saved = names[i]
    names[i] = f"{twin.world.frag_l2[i]}:0:0-64_0-64_0-40" if twin.flavor == "v1" else "~2/0-0.shard:0:64"
    twin.world._frag_rows[root] = [i]
    stitched = twin.world.v1_manifests.pop(root, None)  # v1 lists an edited root's stitched fragments
    try:
        with pytest.raises(Exception) as err:
            cave.mesh(root)
        assert not isinstance(err.value, SampleError)
    finally:
        names[i] = saved
        twin.world._frag_rows[root] = rows
        if stitched is not None:
            twin.world.v1_manifests[root] = stitched


# ---------------------------------------------------------------- the bank and the fetch, end to end
def test_bank_through_the_twin_equals_the_demo_bank(cave, demo, demo_cfg, twin):
    n = len(twin.requests)
    got = build_bank(RetryingSource(cave), twin_config(demo_cfg, twin.url))
    want = build_bank(RetryingSource(demo), demo_cfg)
    assert [r["combined_sample_hash"] for r in got.rows] == [r["combined_sample_hash"] for r in want.rows]
    for a, b in zip(got.rows, want.rows, strict=True):
        for key in ("sample_type", "coord_nm", "geometry_roots", "after_roots", "mask_a_root", "mask_b_root"):
            assert a[key] == b[key], key
    _within_limits(twin, n)
    assert max(r.bytes_sent for r in twin.requests[n:] if "/query" in r.path) > 0


def test_fetch_through_the_twin_matches_demo_with_each_root_once(cave, demo, demo_cfg, twin):
    rows = build_bank(RetryingSource(demo), demo_cfg).rows[:10]
    cfg = twin_config(demo_cfg, twin.url)
    session = RetryingSource(cave)
    meshes = PartitionMeshes(session, cfg, rows)
    n = len(twin.requests)

    def attempt(fn):  # noqa: ANN001, ANN202
        try:
            return fn()
        except SampleError as exc:
            return exc.reason

    for row in rows:
        try:
            a = attempt(lambda row=row: fetch_sample(session, cfg, row, meshes))
        finally:
            meshes.done(row)
        b = attempt(lambda row=row: fetch_sample(demo, demo_cfg, row))
        if isinstance(b, str) or isinstance(a, str):
            assert a == b  # the same failure reason
            continue
        assert np.array_equal(a.em, b.em) and np.array_equal(a.labels, b.labels)
        # the same crop, up to faces a quantized vertex moved across the crop's faces
        assert abs(len(a.meshes[0][1]) - len(b.meshes[0][1])) <= 0.01 * len(b.meshes[0][1]) + 5
    manifests = [r for r in twin.requests[n:] if "/manifest/" in r.path]
    roots = {r.path.rsplit("/", 1)[-1] for r in manifests}
    assert len(manifests) <= len(roots) + sum(1 for r in manifests if "bounds=" not in r.query)
    assert len(roots) == meshes.fetches
    half = crop_box_half_nm(cfg)
    assert half > 3000  # the box the pad and the union boxes are sized against


# ---------------------------------------------------------------- the limits
def test_change_logs_learn_the_servers_bound(make, twin, fresh_adaptive):
    """The twin refuses more than 4 roots per change-log request (504): the source bisects, learns 4 or fewer,
    and gives the same log as without the bound."""
    roots = make().proofread_roots()
    want = make().change_log(roots)
    twin.limits = dataclasses.replace(twin.limits, change_log_roots=4)
    n = len(twin.requests)
    log = make(CaveLimits(change_log_batch=16)).change_log(roots)
    calls = [r for r in twin.requests[n:] if r.path.endswith("/tabular_change_log_many")]
    assert log.equals(want) and log.num_rows > 0
    assert any(r.status == 504 for r in calls) and calls[-1].status == 200
    counters = fresh_adaptive.take_counters()
    assert counters["refused"] > 0 and counters["bisections"] > 0 and counters["sizes"]["change_log"][0] <= 4
    n = len(twin.requests)
    assert make(CaveLimits(change_log_batch=16)).change_log(roots).equals(want)  # a new source, the learned size
    assert all(r.status == 200 for r in twin.requests[n:] if r.path.endswith("/tabular_change_log_many"))


def test_operation_details_learn_the_url_limit(make, demo, twin):
    ops = sorted({int(o) for o in demo._table("operations")["operation_id"].to_pylist()})
    want = make().operation_details(ops)
    twin.limits = dataclasses.replace(twin.limits, url_bytes=200)
    n = len(twin.requests)
    got = make(CaveLimits(operation_details_batch=100)).operation_details(ops)
    calls = [r for r in twin.requests[n:] if r.path.endswith("/operation_details")]
    assert got == want and set(got) == set(ops)
    assert any(r.status == 414 for r in calls) and max(r.url_bytes for r in calls if r.status == 200) <= 200


def test_capped_queries_are_split_never_truncated(make, demo, twin, caplog):
    roots = demo.proofread_roots()
    want = demo.synapses(roots, roots)["id"].to_pylist()
    twin.limits = dataclasses.replace(twin.limits, row_cap=4)
    n = len(twin.requests)
    cave = make(CaveLimits(synapse_pre_batch=50))
    assert cave.proofread_roots() == roots  # 17 rows read 4 at a time, by id ranges
    assert sorted(cave.synapses(roots, roots)["id"].to_pylist()) == sorted(want)
    queries = [r for r in twin.requests[n:] if r.path.endswith("/query")]
    assert len(queries) > len(want) // 4  # capped answers were split and asked again
    assert cave._cap.cap == 4  # learned from the Warning header
    # caveclient's own line about the cap is dropped: the truncation it warns of did not reach a row
    assert not [r for r in caplog.records if "Limited query" in r.getMessage()]


def test_cap_watch_reads_the_header_and_the_count():
    class Resp:
        def __init__(self, warning: str) -> None:
            self.headers = {"Warning": warning} if warning else {}

    watch = CapWatch()
    watch.reset()
    watch.hook(Resp(""))
    assert not watch.capped(10)
    watch.hook(Resp('201 - "Limited query to 10 rows'))
    assert watch.capped(3) and watch.cap == 10
    watch.reset()
    assert watch.capped(10) and not watch.capped(9)  # exactly the cap, even without the header


def test_live_query_at_as_of(make, demo, twin):
    """Pinned to a time (not a version): caveclient's live query maps roots through the chunkedgraph."""
    cave = make(as_of=demo.as_of() - 1.0, materialization_version=None)
    roots = demo.proofread_roots()
    n = len(twin.requests)
    got = cave.synapses(roots, roots)["id"].to_pylist()
    assert got == sorted(demo.synapses(roots, roots)["id"].to_pylist())
    paths = [r.path for r in twin.requests[n:]]
    assert any(p.endswith("/past_id_mapping") for p in paths) and any("/version/2/" in p for p in paths)


def test_startup_checks_name_the_problem(make, twin):
    with pytest.raises(UserError, match=r"versions that do: 2, 3"):
        make(materialization_version=1).proofread_roots()  # version 1 has expired
    other = f"graphene://{twin.url}/segmentation/table/another_table"
    with pytest.raises(UserError, match="seg_cloudpath.*segmentation_source"):
        make(seg_cloudpath=other).proofread_roots()
    with pytest.raises(UserError, match="older than every materialization version"):
        make(as_of=1.0e9, materialization_version=None).proofread_roots()


def test_timeouts_bound_every_request(make, twin):
    """Short read timeouts for the level-2 graph and the manifest only: the roots are read with the long default,
    so nothing but the two requests under test can time out, however busy the machine."""
    short = {"read_timeout_s": {"default": 600.0, "level2_graph": 0.25, "manifest": 0.25}}
    cave = make(cave_requests=short)
    roots = cave.proofread_roots()
    # each answer now comes after three times the longest wait of the client (0.25 s, then 4 x 0.25 s once):
    # a bounded request gives up on it, a late timer cannot make it see the answer
    twin.limits = dataclasses.replace(twin.limits, latency_ms=3000)
    n = len(twin.requests)
    with pytest.raises(Unavailable, match="level2_graph_unavailable"):
        cave.skeleton(roots[0])
    with pytest.raises(Unavailable, match="mesh_unavailable"):
        cave.mesh(roots[0])
    assert twin.log.wait_idle()  # the twin is still sleeping on the answers the client gave up on
    asked = [r.path for r in twin.requests[n:]]
    # each asked twice: once, then once more after its timeout with a longer wait, never again
    assert sum(p.endswith("/lvl2_graph") for p in asked) == 2
    assert sum("/manifest/" in p for p in asked) == 2


def test_skeleton_without_an_l2cache_uses_chunk_centres(make, twin):
    twin.app.l2cache = False
    try:
        cave = make()
        root = cave.proofread_roots()[0]
        skel = cave.skeleton(root)
    finally:
        twin.app.l2cache = True
    assert skel.extra["coords"] == "chunk_centre" and len(skel.vertices_nm) > 0
    assert skel.edges.shape[1] == 2


def test_pickled_source_keeps_its_checks_and_reconnects(cave, twin):
    import pickle

    roots = cave.proofread_roots()
    clone = pickle.loads(pickle.dumps(cave))
    assert clone._checked and clone._client is None
    n = len(twin.requests)
    assert clone.proofread_roots() == roots
    assert not any("/datastack/" in r.path and r.path.endswith("/versions") for r in twin.requests[n:])
    assert isinstance(clone.synapses(roots, roots), pa.Table)
