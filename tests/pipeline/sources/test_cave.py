"""CaveSource against the twin (v2) of the tiny world: the real caveclient and cloud-volume over HTTP, offline.

What test_cave_twin.py compares with DemoSource is not repeated here; these pin the source's own rules: its
shapes and types, how it pins a release, tables of other datastacks' shapes (the twin's tables reshaped), and
how it meets failures (the twin's faults: sim/twin/faults.py).
"""

from __future__ import annotations

import pickle
import time
from urllib.parse import parse_qs

import numpy as np
import pyarrow as pa
import pytest
import tenacity
from cloudfiles.interfaces import HttpInterface

from core.errors import TransientSourceError, Unavailable, UserError
from pipeline.sources import adaptive
from pipeline.sources.base import CHANGE_LOG_COLUMNS, SYNAPSE_COLUMNS, Cutout, OperationDetails, Skeleton, Source
from pipeline.sources.cave import CaveSource
from pipeline.sources.cave.values import epoch as _epoch
from pipeline.sources.demo import DemoSource
from pipeline.sources.demo_volume import CHUNK, RES, VOXEL_OFFSET
from sim.twin import TOKEN, Fault, TwinServer
from sim.twin.model import to_ms
from tests.conftest import free_port

NT = ("gaba", "ach", "glut", "oct", "ser", "da")
SCORES = ("cleft_score", "connection_score", *NT)


@pytest.fixture()
def fly(make_cfg):
    """Pinned to a materialization version (like fly / mouse)."""
    return CaveSource(make_cfg(), token=TOKEN)


@pytest.fixture()
def demo(demo_cfg, twin_world):
    return DemoSource(demo_cfg, twin_world)


@pytest.fixture()
def human(make_cfg, demo):
    """Pinned to as_of with delta-root proofreading and a live synapse query (like human / zebrafish)."""
    cfg = make_cfg(
        materialization_version=None,
        as_of=demo.as_of() - 1.0,
        proofread_table=None,
        proofread_from_delta_roots=True,
    )
    return CaveSource(cfg, token=TOKEN)


def _paths(twin: TwinServer, since: int, contains: str = "") -> list[str]:
    return [r.path for r in twin.requests[since:] if contains in r.path]


def _ops(twin: TwinServer, merge: bool) -> list:
    return sorted((op for op in twin.world.ops.values() if op.is_merge == merge), key=lambda op: op.operation_id)


# ---------------------------------------------------------------- protocol, pickling
def test_is_a_source_and_pickles_without_clients(fly):
    assert isinstance(fly, Source)
    roots = fly.proofread_roots()  # opens the CAVEclient
    assert fly._client is not None
    clone = pickle.loads(pickle.dumps(fly))
    assert clone._client is None and clone._cg_client is None and clone._seg_cv is None
    assert clone._reached  # a worker treats later connection errors as transient
    assert clone.proofread_roots() == roots  # reconnects lazily


# ---------------------------------------------------------------- pinning and proofread roots
def test_as_of_from_materialization_version(make_cfg, cave_twin):
    for v in (2, 3):
        src = CaveSource(make_cfg(materialization_version=v), token=TOKEN)
        assert src.as_of() == cave_twin.world.version(v).timestamp


def test_proofread_roots_from_table_pinned_to_version(make_cfg, cave_twin):
    n = len(cave_twin.requests)
    roots = CaveSource(make_cfg(materialization_version=2), token=TOKEN).proofread_roots()
    want = cave_twin.world.table("proofread_neurons", 2)["pt_root_id"].to_pylist()
    assert roots == sorted({r for r in want if r})
    queries = _paths(cave_twin, n, "/query")
    assert queries and all("/version/2/table/proofread_neurons/" in p for p in queries)


def test_proofread_roots_from_delta_roots(human, cave_twin):
    n = len(cave_twin.requests)
    world = cave_twin.world
    old, new = world.delta_roots(to_ms(world.first_op_s - 0.5), to_ms(human.as_of()))
    roots = human.proofread_roots()
    assert roots == sorted(set(new) - set(old)) and roots  # new minus expired
    delta = [r for r in cave_twin.requests[n:] if r.path.endswith("/delta_roots")]
    assert delta and float(parse_qs(delta[0].query)["timestamp_future"][0]) == pytest.approx(human.as_of())


def test_missing_column_names_table_and_column(make_cfg, reshaped):
    reshaped["proofread_neurons"] = lambda t: t.drop_columns(["pt_root_id"])
    with pytest.raises(UserError, match=r"proofread_neurons.*pt_root_id"):
        CaveSource(make_cfg(), token=TOKEN).proofread_roots()
    reshaped["synapses"] = lambda t: t.drop_columns(["ctr_pt_position", "pre_pt_position", "post_pt_position"])
    src = CaveSource(make_cfg(), token=TOKEN)
    with pytest.raises(UserError, match=r"synapses.*ctr_pt_position"):
        src.synapses([1], [2])


# ---------------------------------------------------------------- history
def test_change_log_normalised(fly, cave_twin):
    merge = _ops(cave_twin, merge=True)[0]
    root = merge.after[0]
    table = fly.change_log([root, root])
    assert isinstance(table, pa.Table)
    assert table.column_names[: len(CHANGE_LOG_COLUMNS)] == list(CHANGE_LOG_COLUMNS)
    assert table.schema.field("root_id").type == pa.uint64()
    assert table.schema.field("timestamp").type == pa.float64()
    assert table.schema.field("before_root_ids").type == pa.list_(pa.uint64())
    rows = table.to_pylist()
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)  # oldest first
    assert len({r["operation_id"] for r in rows}) == len(rows)  # a root asked twice is read once
    assert {
        "root_id": root,
        "operation_id": merge.operation_id,
        "timestamp": pytest.approx(merge.timestamp),
        "is_merge": True,
        "before_root_ids": list(merge.before),
        "after_root_ids": [root],
    } in rows
    assert fly.change_log([]).num_rows == 0


def test_operation_details_without_change_log(fly, cave_twin):
    """A fresh worker: before roots come from the edited supervoxels' roots at T - 1 ms; unknown ids are dropped."""
    merge, split = _ops(cave_twin, merge=True)[0], _ops(cave_twin, merge=False)[0]
    unknown = max(cave_twin.world.ops) + 1000
    ops = fly.operation_details([merge.operation_id, split.operation_id, unknown])
    assert set(ops) == {merge.operation_id, split.operation_id}
    for want in (merge, split):
        got = ops[want.operation_id]
        assert isinstance(got, OperationDetails)
        assert got.is_merge == want.is_merge and got.timestamp == pytest.approx(want.timestamp)
        assert set(got.before_root_ids) == set(want.before) and got.after_root_ids == want.after
        assert got.source_coords_vx == tuple(tuple(map(float, p)) for p in want.source_vx)
        assert got.sink_coords_vx == tuple(tuple(map(float, p)) for p in want.sink_vx)


def test_operation_details_after_change_log_agree(make_cfg, cave_twin):
    merge, split = _ops(cave_twin, merge=True)[0], _ops(cave_twin, merge=False)[0]
    ids = [merge.operation_id, split.operation_id]
    fresh = CaveSource(make_cfg(), token=TOKEN).operation_details(ids)
    src = CaveSource(make_cfg(), token=TOKEN)
    src.change_log([merge.after[0], *split.after])
    logged = src.operation_details(ids)
    for op in ids:
        assert set(logged[op].before_root_ids) == set(fresh[op].before_root_ids)
        assert logged[op].timestamp == pytest.approx(fresh[op].timestamp)


def test_timestamps_in_every_form_the_servers_send():
    """ISO (the twin, PyChunkedGraph's encoder), RFC 1123 (Flask's default), and numbers in s or ms."""
    t = 1690000000.0
    assert _epoch("2023-07-22 04:26:40+00:00") == t
    assert _epoch("Sat, 22 Jul 2023 04:26:40 GMT") == t
    assert _epoch(t) == t and _epoch(int(t * 1000)) == t


def test_roots_at_is_time_resolved(fly, cave_twin):
    merge = _ops(cave_twin, merge=True)[0]
    a, b = merge.edge
    svs = np.array([[a, 0], [b, a]], dtype=np.uint64)
    before = fly.roots_at(svs, merge.timestamp - 0.001)
    after = fly.roots_at(svs, merge.timestamp)  # end inclusive: the edit is seen at its own time
    assert before.dtype == np.uint64 and before.shape == svs.shape
    assert before[0, 1] == 0 and after[0, 1] == 0
    assert {int(before[0, 0]), int(before[1, 0])} == set(merge.before) and before[0, 0] == before[1, 1]
    assert (after[[0, 1, 1], [0, 0, 1]] == merge.after[0]).all()


# ---------------------------------------------------------------- synapses
def test_synapses_without_a_centre_use_the_midpoint_and_keep_nt_scores(fly, reshaped, cave_twin):
    reshaped["synapses"] = lambda t: t.drop_columns(["ctr_pt_position"])
    world = cave_twin.world.table("synapses", 3)
    roots = fly.proofread_roots()
    table = fly.synapses(roots, roots)
    assert table.column_names[: len(SYNAPSE_COLUMNS)] == list(SYNAPSE_COLUMNS)
    assert table.schema.field("ctr_pt_position_nm").type == pa.list_(pa.float64(), 3)
    assert set(SCORES) <= set(table.column_names)
    by_id = {r["id"]: r for r in world.to_pylist()}
    assert table.num_rows > 0
    for row in table.to_pylist():
        want = by_id[row["id"]]
        mid = (np.asarray(want["pre_pt_position"]) + np.asarray(want["post_pt_position"])) / 2 * RES
        assert row["ctr_pt_position_nm"] == pytest.approx(mid.tolist())
        assert row["cleft_score"] == want["cleft_score"] and row["gaba"] == want["gaba"]


def test_synapses_pre_and_post_sets_deduplicated(fly, demo):
    roots = demo.proofread_roots()
    pre, post = roots[: len(roots) // 2], roots[len(roots) // 2 :]
    got = fly.synapses(pre + pre, post + post[:1])["id"].to_pylist()
    assert got == sorted(demo.synapses(pre, post)["id"].to_pylist()) and len(set(got)) == len(got) > 0
    lonely = next(r for r in roots if not fly.synapses([r], [r]).num_rows)
    assert fly.synapses([lonely], [lonely]).num_rows == 0  # pre AND post must match


def test_synapses_live_query_at_as_of_without_scores(human, reshaped, cave_twin):
    """MICrONS' table shape: a centre point and no score columns at all (none are made up)."""
    reshaped["synapses"] = lambda t: t.drop_columns(list(SCORES))
    roots = sorted(int(r) for r in cave_twin.world.table("proofread_neurons", 3)["pt_root_id"].to_pylist() if r)
    n = len(cave_twin.requests)
    table = human.synapses(roots, roots)
    assert table.num_rows > 0 and not set(SCORES) & set(table.column_names)
    world = {r["id"]: r for r in cave_twin.world.table("synapses", 2).to_pylist()}
    for row in table.to_pylist():
        ctr_nm = np.asarray(world[row["id"]]["ctr_pt_position"]) * RES
        assert row["ctr_pt_position_nm"] == pytest.approx(ctr_nm.tolist())
    paths = _paths(cave_twin, n)
    assert any(p.endswith("/version/2/table/synapses/query") for p in paths)  # latest version before as_of
    assert any(p.endswith("/past_id_mapping") for p in paths)  # live-query machinery exercised


# ---------------------------------------------------------------- level-2 graph
def test_skeleton_from_level2_graph(fly, demo, cave_twin):
    root = fly.proofread_roots()[0]
    skel = fly.skeleton(root)
    assert isinstance(skel, Skeleton)
    assert skel.vertices_nm.ndim == 2 and skel.vertices_nm.shape[1] == 3 and skel.vertices_nm.dtype == np.float64
    assert skel.edges.ndim == 2 and skel.edges.shape[1] == 2 and skel.edges.dtype == np.int64
    assert len(skel.vertices_nm) > 0 and skel.edges.max() < len(skel.vertices_nm)
    without = next(int(r) for r in cave_twin.world.root_ids if int(r) not in cave_twin.world.l2_edges)
    empty = fly.skeleton(without)
    assert empty.vertices_nm.shape == (0, 3) and empty.edges.shape == (0, 2)


# ---------------------------------------------------------------- CloudVolume
def _top_chunk_centre(fly, twin_world) -> np.ndarray:
    """A point on the volume's top face (z) at the centre of a chunk the world has there."""
    lo, hi = (np.asarray(p) / RES for p in fly.canonical_bbox_nm())
    top = f"{int(hi[2]) - 40}-{int(hi[2])}"
    name = next(p.name for p in sorted((twin_world / "em" / "32_32_45").iterdir()) if f"_{top}." in p.name)
    x, y = (int(part.split("-")[0]) + 32 for part in name.split("_")[:2])
    return np.array([x, y, hi[2]]) * RES


def test_em_cutout_zero_padded_outside_volume_and_not_missing(fly, demo, twin_world):
    center = _top_chunk_centre(fly, twin_world)
    cut = fly.em_cutout(center, 640.0)
    assert isinstance(cut, Cutout) and cut.data.dtype == np.uint8 and cut.voxel_nm == tuple(RES)
    want = demo.em_cutout(center, 640.0)
    assert cut.origin_nm == want.origin_nm and np.array_equal(cut.data, want.data)
    inside = np.asarray(cut.origin_nm)[2] / RES[2] + np.arange(cut.data.shape[2]) < center[2] / RES[2]
    assert inside.any() and not inside.all()
    assert cut.data[:, :, inside].any() and not cut.data[:, :, ~inside].any()
    assert cut.missing is None  # padding outside the bounds is not an absent chunk


def _chunk_corner_at_an_edit(twin: TwinServer) -> tuple[np.ndarray, float]:
    """(a corner shared by 2 x 2 x 2 chunks, nearest a merge's point, in nm; a window holding that point)."""
    point = np.asarray(_ops(twin, merge=True)[0].source_vx[0])
    corner = VOXEL_OFFSET + np.round((point - VOXEL_OFFSET) / CHUNK).astype(int) * CHUNK
    return corner * RES, float(2 * (np.abs(point - corner)[:2].max() + 4) * RES[0])


def test_absent_chunks_are_marked_missing_on_the_https_and_graphene_paths(fly, cave_twin):
    """A chunk the bucket answers 404 for is absent: zeros there, marked in `missing`; the others are data."""
    center, window = _chunk_corner_at_an_edit(cave_twin)
    t = fly.as_of()
    whole_em, whole_seg = fly.em_cutout(center, window), fly.segmentation_cutout(center, window, t)
    assert whole_em.missing is None and whole_seg.missing is None
    assert whole_em.data.dtype == np.uint8 and whole_seg.data.dtype == np.uint64
    x, y, z = (int(v) for v in center / RES)
    cave_twin.app.faults.add(
        Fault(rf"^/em/32_32_45/{x}-{x + 64}_{y - 64}-{y}_", status=404),  # x above, y below the corner: both z
        Fault(rf"^/ws/32_32_45/{x - 64}-{x}_{y}-{y + 64}_", status=404),  # x below, y above
    )
    em, seg = fly.em_cutout(center, window), fly.segmentation_cutout(center, window, t)
    assert em.data.shape == whole_em.data.shape and em.origin_nm == whole_em.origin_nm
    vx = np.asarray(em.origin_nm)[:2] / RES[:2]
    xs, ys = vx[0] + np.arange(em.data.shape[0]), vx[1] + np.arange(em.data.shape[1])
    want_em = np.broadcast_to(((xs >= x)[:, None] & (ys < y)[None, :])[:, :, None], em.data.shape)
    assert want_em.any() and np.array_equal(em.missing, want_em)
    assert not em.data[want_em].any() and np.array_equal(em.data[~want_em], whole_em.data[~want_em])
    want_seg = np.broadcast_to(((xs < x)[:, None] & (ys >= y)[None, :])[:, :, None], seg.data.shape)
    assert want_seg.any() and whole_seg.data[~want_seg].any() and np.array_equal(seg.missing, want_seg)
    assert not seg.data[want_seg].any() and np.array_equal(seg.data[~want_seg], whole_seg.data[~want_seg])


def test_a_server_error_on_a_chunk_is_not_a_missing_chunk(fly, cave_twin, monkeypatch):
    # cloud-files retries a 5xx 7 times with random exponential waits (~20 s here): the same retries, no waits
    monkeypatch.setattr(HttpInterface.get_file.retry, "wait", tenacity.wait_none())
    center, _ = _chunk_corner_at_an_edit(cave_twin)
    fly.em_cutout(center, 320.0)  # reach the server first: later errors are transient
    cave_twin.app.faults.add(Fault(r"^/em/32_32_45/", status=503))
    with pytest.raises(TransientSourceError):
        fly.em_cutout(center, 320.0)


# ---------------------------------------------------------------- errors
@pytest.fixture()
def waits(monkeypatch):
    """Every time.sleep the clients ask for (they still sleep): "fails fast" pinned as "waits for nothing",
    which a busy machine cannot make false, where a bound on the wall clock can."""
    asked: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return asked


def test_unreachable_server_is_a_user_error_naming_the_url(make_cfg, waits):
    url = f"http://127.0.0.1:{free_port()}"
    src = CaveSource(make_cfg(server_address=url), token=TOKEN)
    with pytest.raises(UserError) as err:
        src.proofread_roots()
    assert sum(waits) == 0  # no retries with backoff before the one line
    assert url in str(err.value) and "config/demo.yaml" in str(err.value)


def test_unreachable_em_host_is_a_user_error(make_cfg, waits):
    url = f"http://127.0.0.1:{free_port()}/em"
    src = CaveSource(make_cfg(em_cloudpath=f"precomputed://{url}"), token=TOKEN)
    with pytest.raises(UserError, match="could not reach.*em_cloudpath"):
        src.em_cutout(np.zeros(3), 100.0)
    assert sum(waits) == 0


def test_unresolvable_host_is_a_user_error(make_cfg, waits):
    url = "http://cb2-replay-test.invalid"
    with pytest.raises(UserError) as err:
        CaveSource(make_cfg(server_address=url), token=TOKEN).as_of()
    assert url in str(err.value) and sum(waits) == 0


def test_a_server_error_of_one_item_makes_it_unavailable_after_bounded_sends(fly, cave_twin, waits):
    """A level-2 graph answered 500 (PyChunkedGraph's answer to any exception) or 503 again and again, while the
    host answers other requests: resent `item_sends` times by the adaptive layer, then Unavailable (the root's
    junction controls are ledgered `level2_graph_unavailable`; the next build retries them)."""
    root = fly.proofread_roots()[0]
    for status in (500, 503):
        cave_twin.app.faults.clear()
        cave_twin.app.faults.add(Fault(r"/lvl2_graph$", status=status))
        before, waits[:] = len(cave_twin.requests), []
        with pytest.raises(Unavailable, match=f"level2_graph_unavailable: .*HTTP {status}") as gone:
            fly.skeleton(root)
        assert gone.value.reason == "level2_graph_unavailable"
        sent = len(_paths(cave_twin, before, "/lvl2_graph"))
        assert sent == fly.cfg.cave_requests.item_sends  # bounded: the adaptive layer's sends, none by urllib3
        assert sum(waits) <= sum(adaptive.BACKOFF_S * 2**k for k in range(sent))  # and short


def test_lost_connection_after_first_contact_is_transient(make_cfg, twin_world):
    server = TwinServer(twin_world, flavor="v2").start()
    # the whole datastack on the second server (the start-up check would refuse a mixed config)
    src = CaveSource(make_cfg(**_on(server)), token=TOKEN)
    roots = src.proofread_roots()  # first contact with this server
    assert roots
    server.stop()
    with pytest.raises(TransientSourceError):
        src.change_log(roots[:1])


def _on(server: TwinServer) -> dict:
    from sim.twin.species import seg_cloudpath

    return {
        "server_address": server.url,
        "em_cloudpath": f"precomputed://{server.url}/em",
        "seg_cloudpath": seg_cloudpath(server.url),
    }


def test_auth_errors_ask_for_a_token_without_printing_it(make_cfg, cave_twin):
    with pytest.raises(UserError) as err:
        CaveSource(make_cfg(), token=None).proofread_roots()  # no token anywhere: the server says 401
    msg = str(err.value)
    assert "CAVE_TOKEN" in msg and "cave-secret.json" in msg
    src = CaveSource(make_cfg(), token=TOKEN)
    roots = src.proofread_roots()
    cave_twin.app.faults.add(Fault(r"/tabular_change_log_many$", status=403))
    with pytest.raises(UserError) as err:
        src.change_log(roots[:1])
    assert "token" in str(err.value) and TOKEN not in str(err.value)


def test_token_from_environment(make_cfg, monkeypatch, demo):
    monkeypatch.setenv("CAVE_TOKEN", TOKEN)
    assert CaveSource(make_cfg()).proofread_roots() == demo.proofread_roots()


def test_token_never_written_to_disk(make_cfg, isolated_home, tmp_path, cave_twin):
    src = CaveSource(make_cfg(), token=TOKEN)
    roots = src.proofread_roots()
    src.change_log(roots[:2])
    src.mesh(next(r for r in roots if cave_twin.world.fragment_rows(r)))
    src.segmentation_cutout(np.asarray(src.canonical_bbox_nm()[0]) + 1000.0, 200.0, src.as_of())
    assert TOKEN not in repr(src)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert not (isolated_home / ".cloudvolume" / "secrets").exists()


# ---------------------------------------------------------------- each batched endpoint starts at its own size (fast)
class _Recorder:
    """A stand-in for adaptive.ADAPTIVE: records each call's endpoint, start size and items, and sends the items in
    batches of the start size (as the real layer does before it learns anything)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list]] = []

    def run(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - read as the real layer's `run` reads them
        import inspect

        got = inspect.signature(adaptive.Adaptive.run).bind(self, *args, **kwargs).arguments
        endpoint, items, send, start = got["endpoint"], got["items"], got["send"], got["start"]
        self.calls.append((endpoint, start, list(items)))
        batches = [list(items[i : i + start]) for i in range(0, len(items), start)]
        return [(b, send(b)) for b in batches]


class _FakeClient:
    local_server = "https://cave.local"


class _FakeChunkedgraph:
    """Change logs, operation details, root timestamps and roots of a few invented roots and edits."""

    def __init__(self) -> None:
        self.asked: dict[str, list[list]] = {}

    def _ask(self, what: str, batch) -> None:  # noqa: ANN001
        self.asked.setdefault(what, []).append([int(v) for v in batch])

    def get_tabular_change_log(self, roots, filtered=True):  # noqa: ANN001, ANN201
        import pandas as pd

        self._ask("change_log", roots)
        return {
            int(r): pd.DataFrame({"operation_id": [int(r)], "timestamp": [1_000.0], "is_merge": [True],
                                  "before_root_ids": [[int(r) + 1, int(r) + 2]], "after_root_ids": [[int(r)]]})
            for r in roots
        }  # fmt: skip

    def get_operation_details(self, ids):  # noqa: ANN001, ANN201
        self._ask("operation_details", ids)
        return {str(i): {"added_edges": [[1, 2]], "roots": [10_000 + int(i)], "source_coords": [[1, 2, 3]],
                         "sink_coords": [[3, 2, 1]]} for i in ids}  # fmt: skip

    def get_root_timestamps(self, roots):  # noqa: ANN001, ANN201
        self._ask("root_timestamps", roots)
        return [1_000.0 for _ in roots]

    def get_roots(self, svs, timestamp=None):  # noqa: ANN001, ANN201
        self._ask("roots", svs)
        return np.asarray(svs, dtype=np.uint64) + np.uint64(1)

    def level2_chunk_graph(self, root):  # noqa: ANN001, ANN201
        return [[i, i + 1] for i in range(1, 30)]


class _FakeL2:
    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    def get_l2data(self, ids, attributes):  # noqa: ANN001, ANN201
        self.asked.append([int(v) for v in ids])
        return {str(i): {"rep_coord_nm": [float(i) * 1000.0, 0.0, 0.0]} for i in ids}


# sizes no two endpoints share, none of them the default
SIZES = {"change_log_batch": 3, "operation_details_batch": 4, "synapse_pre_batch": 5, "roots_batch": 6,
         "l2_batch": 7}  # fmt: skip


@pytest.fixture()
def offline_cave(monkeypatch):
    """A CaveSource of the shipped fly config whose clients are fakes and whose adaptive layer records."""
    from config import load_config
    from config.schema import CONFIG_DIR
    from pipeline.sources.cave.limits import CaveLimits

    recorder = _Recorder()
    monkeypatch.setattr(adaptive, "ADAPTIVE", recorder)
    limits = CaveLimits(**SIZES)
    assert len(set(SIZES.values())) == len(SIZES) and all(getattr(CaveLimits(), k) != v for k, v in SIZES.items())
    src = CaveSource(load_config("fly", CONFIG_DIR), token="fake-token", limits=limits)
    src._client, src._cg_client, src._l2_client = _FakeClient(), _FakeChunkedgraph(), _FakeL2()
    src._as_of, src._checked, src._reached, src._l2cache = 2_000.0, True, True, True
    return src, recorder


def _starts(recorder: _Recorder, endpoint: str) -> set[int]:
    return {start for e, start, _ in recorder.calls if e == endpoint}


def test_change_logs_are_asked_through_the_change_log_endpoint_at_its_own_batch_size(offline_cave):
    src, recorder = offline_cave
    roots = list(range(100, 110))
    log = src.change_log(roots)
    assert _starts(recorder, "change_log") == {SIZES["change_log_batch"]}
    assert src._cg_client.asked["change_log"] == [[100, 101, 102], [103, 104, 105], [106, 107, 108], [109]]
    assert sorted(log.column("root_id").to_pylist()) == roots  # every batch's answer kept


def test_operation_details_and_their_root_timestamps_start_at_their_own_batch_sizes(offline_cave):
    src, recorder = offline_cave
    got = src.operation_details(list(range(1, 10)))
    assert sorted(got) == list(range(1, 10))
    assert _starts(recorder, "operation_details") == {SIZES["operation_details_batch"]}
    assert [len(b) for b in src._cg_client.asked["operation_details"]] == [4, 4, 1]
    assert _starts(recorder, "root_timestamps") == {SIZES["roots_batch"]}
    assert [len(b) for b in src._cg_client.asked["root_timestamps"]] == [6, 3]


def test_roots_at_a_time_start_at_the_roots_batch_size(offline_cave):
    src, recorder = offline_cave
    svs = np.arange(1, 14, dtype=np.uint64)
    assert src.roots_at(svs, 1_500.0).tolist() == (svs + np.uint64(1)).tolist()
    assert _starts(recorder, "roots") == {SIZES["roots_batch"]}
    assert [len(b) for b in src._cg_client.asked["roots"]] == [6, 6, 1]


def test_level2_attributes_start_at_the_l2_batch_size(offline_cave):
    src, recorder = offline_cave
    skel = src.skeleton(1)
    assert len(skel.vertices_nm) == 30
    assert _starts(recorder, "l2cache") == {SIZES["l2_batch"]}
    assert [len(b) for b in src._l2_client.asked] == [7, 7, 7, 7, 2]
    assert _starts(recorder, "level2_graph") == {1}  # one graph per request: nothing to batch


def test_synapse_queries_start_at_the_synapse_pre_batch_size(offline_cave):
    import pandas as pd

    src, recorder = offline_cave
    asked: list[list[int]] = []

    class _Mat:
        def query_table(self, table, materialization_version=None, filter_in_dict=None, **_):  # noqa: ANN001, ANN003, ANN201
            if filter_in_dict is None:  # the one-row probe of the table's columns
                return pd.DataFrame({"id": [1], "pre_pt_root_id": [1], "post_pt_root_id": [2],
                                     "ctr_pt_position": [[0, 0, 0]], "cleft_score": [99.0]})  # fmt: skip
            pre = [int(r) for r in filter_in_dict["pre_pt_root_id"]]
            asked.append(pre)
            n = len(pre)
            return pd.DataFrame({"id": pre, "pre_pt_root_id": pre, "post_pt_root_id": [2] * n,
                                 "ctr_pt_position": [[0, 0, 0]] * n, "cleft_score": [99.0] * n})  # fmt: skip

    src._mat_client = _Mat()
    pre = list(range(10, 22))
    table = src.synapses(pre, [2])
    assert _starts(recorder, "synapses") == {SIZES["synapse_pre_batch"]}
    assert [len(b) for b in asked] == [5, 5, 2]
    assert sorted(table.column("pre_pt_root_id").to_pylist()) == pre


# ---------------------------------------------------------------- a bounded mesh fetch: the box's fragments only
class _FakeMeta:
    """The graphene metadata CaveSource.mesh reads: a 4 x 4 x 40 nm volume of 256 x 256 x 32 voxel chunks."""

    manifest_endpoint = "https://seg.local/meshing/api/v1/table/fake/manifest"
    auth_header: dict = {}
    chunks_start_at_voxel_offset = False
    max_meshed_layer = 6

    def bounds(self, mip):  # noqa: ANN001, ANN201
        from cloudvolume.lib import Bbox

        return Bbox((0, 0, 0), (1024, 512, 64))

    def resolution(self, mip):  # noqa: ANN001, ANN201
        return (4.0, 4.0, 40.0)

    def voxel_offset(self, mip):  # noqa: ANN001, ANN201
        return (0, 0, 0)

    def decode_layer_id(self, root):  # noqa: ANN001, ANN201
        return 10


class _FakeMeshes:
    """cloud-volume's mesh source: downloads what the prepared manifest lists (one triangle per fragment)."""

    def __init__(self, src: CaveSource) -> None:
        self.src, self.downloaded = src, []

    def get(self, root, bounding_box=None, deduplicate_chunk_boundaries=False):  # noqa: ANN001, ANN201
        from types import SimpleNamespace

        names = self.src._manifests(root)["fragments"]
        self.downloaded += names
        verts = np.array([[[i, 0, 0], [i, 1, 0], [i, 0, 1]] for i in range(len(names))], float).reshape(-1, 3)
        return SimpleNamespace(vertices=verts, faces=np.arange(len(verts)).reshape(-1, 3))


class _V1ManifestSession:
    """The meshing service of a v1 server: its manifest ignores `bounds` and lists every fragment of the root."""

    def __init__(self, fragments: list[str]) -> None:
        self.fragments, self.params = fragments, []

    def get(self, url, data=None, params=None, headers=None, timeout=None):  # noqa: ANN001, ANN201
        from types import SimpleNamespace

        self.params.append(params)
        body = {"fragments": list(self.fragments)}
        return SimpleNamespace(status_code=200, json=lambda: body, raise_for_status=lambda: None)


def test_a_bounded_mesh_fetch_downloads_only_the_fragments_inside_the_box_though_the_server_lists_all(offline_cave):
    from types import SimpleNamespace

    src, _recorder = offline_cave
    src.limits = type(src.limits)(mesh_pad_nm=0.0)
    names = [f"7:0:{x}-{x + 256}_0-256_0-32" for x in (0, 256, 512, 768)]  # four chunks along x
    session = _V1ManifestSession(names)
    meshes = _FakeMeshes(src)
    src._seg_cv, src._mesh_session = SimpleNamespace(meta=_FakeMeta(), mesh=meshes), session
    box_nm = (np.array([1100.0, 100.0, 100.0]), np.array([1900.0, 900.0, 900.0]))  # x voxels 275..475: chunk 1
    mesh = src.mesh(7, box_nm=box_nm)
    assert meshes.downloaded == [names[1]]
    assert len(mesh.faces) == 1
    assert session.params[0]["bounds"] == "275-475_25-225_2-23"  # the server is asked for the box too


# ---------------------------------------------------------------- every query pinned: a version, or live at as_of
class _PinnedMat:
    """A materialization client that notes how each query was pinned."""

    def __init__(self) -> None:
        self.pins: list[tuple[str, object]] = []

    def _rows(self):  # noqa: ANN202
        import pandas as pd

        return pd.DataFrame({"id": [1, 2], "pt_root_id": [720, 721], "pt_supervoxel_id": [5, 6]})

    def query_table(self, table, materialization_version=None, **_):  # noqa: ANN001, ANN003, ANN201
        self.pins.append(("version", materialization_version))
        return self._rows()

    def live_query(self, table, timestamp, **_):  # noqa: ANN001, ANN003, ANN201
        self.pins.append(("live", timestamp))
        return self._rows()


def test_table_queries_are_pinned_to_the_configured_version(offline_cave):
    src, _ = offline_cave
    src._mat_client = mat = _PinnedMat()
    assert src.proofread_roots() == [720, 721]
    assert mat.pins and set(mat.pins) == {("version", 783)}  # fly pins materialization 783: never "now"


def test_without_a_version_queries_are_live_at_as_of_never_now(offline_cave):
    import datetime as dt

    src, _ = offline_cave
    src.cfg = src.cfg.model_copy(update={"materialization_version": None, "as_of": 1_700_000_000.0})
    src._as_of = None
    src._mat_client = mat = _PinnedMat()
    assert src.proofread_roots() == [720, 721]
    when = dt.datetime.fromtimestamp(1_700_000_000.0, dt.timezone.utc)
    assert mat.pins and set(mat.pins) == {("live", when)}


def test_the_token_is_never_shown_by_the_source_or_its_error_messages(offline_cave):
    src, _ = offline_cave
    assert "fake-token" not in repr(src)
    assert src._redact("GET /x?token=fake-token failed") == "GET /x?token=*** failed"
    assert "fake-token" not in str(src._auth_error("https://cave.local/api"))
