"""CaveSource against the replay server: the real caveclient and cloud-volume over HTTP, offline."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pyarrow as pa
import pytest
import tenacity
import trimesh
from cloudfiles.interfaces import HttpInterface

from pipeline.core.errors import SampleError, TransientSourceError, UserError
from pipeline.sources import adaptive
from pipeline.sources.base import CHANGE_LOG_COLUMNS, SYNAPSE_COLUMNS, Cutout, OperationDetails, Skeleton, Source
from pipeline.sources.cave import CaveSource
from tests.conftest import free_port
from tests.pipeline.sources.cave_server import (
    RES,
    ROOT_A,
    ROOT_AB,
    ROOT_B,
    ROOT_C,
    ROOT_C1,
    ROOT_C2,
    ROOT_NO_MESH,
    SV_A,
    SV_B,
    SV_C1,
    T_MERGE,
    T_SPLIT,
    TABLE_ID,
    TOKEN,
    em_value,
)

AS_OF_HUMAN = "2024-06-01T00:00:00Z"


@pytest.fixture()
def fly(make_cfg):
    """Pinned to materialization version 2 (like fly / mouse)."""
    return CaveSource(make_cfg(), token=TOKEN)


@pytest.fixture()
def human(make_cfg):
    """Pinned to as_of with delta-root proofreading and a live synapse query (like human / zebrafish)."""
    cfg = make_cfg(
        species="human",
        materialization_version=None,
        as_of=AS_OF_HUMAN,
        proofread_table=None,
        proofread_from_delta_roots=True,
        synapse_table="synapses_pni",
    )
    return CaveSource(cfg, token=TOKEN)


@pytest.fixture(autouse=True)
def _clear_faults(cave_server):
    cave_server.faults.clear()
    yield
    cave_server.faults.clear()


# ---------------------------------------------------------------- protocol, pickling
def test_is_a_source_and_pickles_without_clients(fly):
    assert isinstance(fly, Source)
    fly.as_of()  # opens the CAVEclient
    assert fly._client is not None
    clone = pickle.loads(pickle.dumps(fly))
    assert clone._client is None and clone._cg_client is None and clone._seg_cv is None
    assert clone._reached  # a worker treats later connection errors as transient
    assert clone.proofread_roots() == [ROOT_AB, ROOT_C1]  # reconnects lazily


# ---------------------------------------------------------------- pinning and proofread roots
def test_as_of_from_materialization_version(fly, cave_server):
    assert fly.as_of() == pytest.approx(1704067200.0)  # version 2: 2024-01-01T00:00:00Z


def test_proofread_roots_from_table_pinned_to_version(fly, cave_server):
    n = len(cave_server.requests)
    assert fly.proofread_roots() == sorted([ROOT_AB, ROOT_C1])
    queries = [p for _, p, _, _ in cave_server.requests[n:] if p.endswith("/query")]
    assert queries and all("/version/2/table/proofread_neurons/" in p for p in queries)


def test_proofread_roots_from_delta_roots(human, cave_server):
    n = len(cave_server.requests)
    assert human.proofread_roots() == sorted([ROOT_AB, ROOT_C1, ROOT_C2])  # new minus expired
    delta = [q for _, p, q, _ in cave_server.requests[n:] if p.endswith("/delta_roots")]
    assert delta and float(delta[0]["timestamp_future"]) == pytest.approx(human.as_of())


def test_missing_column_names_table_and_column(make_cfg):
    src = CaveSource(make_cfg(proofread_table="proofread_no_root"), token=TOKEN)
    with pytest.raises(UserError, match=r"proofread_no_root.*pt_root_id"):
        src.proofread_roots()
    src = CaveSource(make_cfg(synapse_table="synapses_no_position"), token=TOKEN)
    with pytest.raises(UserError, match=r"synapses_no_position.*ctr_pt_position"):
        src.synapses([ROOT_AB], [ROOT_C1])


# ---------------------------------------------------------------- history
def test_change_log_normalised(fly):
    table = fly.change_log([ROOT_AB, ROOT_C1])
    assert isinstance(table, pa.Table)
    assert table.column_names[: len(CHANGE_LOG_COLUMNS)] == list(CHANGE_LOG_COLUMNS)
    assert table.schema.field("root_id").type == pa.uint64()
    assert table.schema.field("timestamp").type == pa.float64()
    assert table.schema.field("before_root_ids").type == pa.list_(pa.uint64())
    rows = table.to_pylist()
    assert rows[0] == {
        "root_id": ROOT_AB,
        "operation_id": 101,
        "timestamp": pytest.approx(T_MERGE),
        "is_merge": True,
        "before_root_ids": [ROOT_A, ROOT_B],
        "after_root_ids": [ROOT_AB],
    }
    assert rows[1]["operation_id"] == 102 and rows[1]["is_merge"] is False
    assert rows[1]["timestamp"] == pytest.approx(T_SPLIT)
    assert fly.change_log([]).num_rows == 0


def test_operation_details_without_change_log(fly):
    """A fresh worker: before roots come from the edited supervoxels' roots at T - 1 ms."""
    ops = fly.operation_details([101, 102, 999])
    assert set(ops) == {101, 102}
    merge, split = ops[101], ops[102]
    assert isinstance(merge, OperationDetails)
    assert merge.is_merge and merge.timestamp == pytest.approx(T_MERGE)
    assert merge.before_root_ids == (ROOT_A, ROOT_B) and merge.after_root_ids == (ROOT_AB,)
    assert merge.source_coords_vx == ((10.0, 20.0, 5.0),) and merge.sink_coords_vx == ((40.0, 20.0, 5.0),)
    assert not split.is_merge and split.timestamp == pytest.approx(T_SPLIT)  # RFC 1123 timestamp parsed
    assert split.before_root_ids == (ROOT_C,) and split.after_root_ids == (ROOT_C1, ROOT_C2)
    assert split.source_coords_vx == ((20.0, 30.0, 4.0), (22.0, 30.0, 4.0))


def test_operation_details_after_change_log_agree(fly):
    fly.change_log([ROOT_AB, ROOT_C1])
    ops = fly.operation_details([101, 102])
    assert ops[101].before_root_ids == (ROOT_A, ROOT_B)
    assert ops[102].before_root_ids == (ROOT_C,)


def test_roots_at_is_time_resolved(fly):
    svs = np.array([[SV_A, 0], [SV_B, SV_C1]], dtype=np.uint64)
    before = fly.roots_at(svs, T_MERGE - 1)
    after = fly.roots_at(svs, T_SPLIT + 1)
    assert before.dtype == np.uint64 and before.shape == svs.shape
    assert before.tolist() == [[ROOT_A, 0], [ROOT_B, ROOT_C]]
    assert after.tolist() == [[ROOT_AB, 0], [ROOT_AB, ROOT_C1]]


# ---------------------------------------------------------------- synapses
def test_synapses_fly_shape_with_nt_scores(fly):
    table = fly.synapses([ROOT_C2], [ROOT_AB])
    assert table.column_names[: len(SYNAPSE_COLUMNS)] == list(SYNAPSE_COLUMNS)
    assert table.schema.field("ctr_pt_position_nm").type == pa.list_(pa.float64(), 3)
    assert {"gaba", "ach", "glut", "oct", "ser", "da"} <= set(table.column_names)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [503]
    # no ctr_pt_position in this table: midpoint of pre (30,30,6) and post (32,30,8) voxels, in nm
    assert rows[0]["ctr_pt_position_nm"] == pytest.approx([31 * RES[0], 30 * RES[1], 7 * RES[2]])
    assert rows[0]["cleft_score"] == 55.0 and rows[0]["connection_score"] == 7.0


def test_synapses_pre_and_post_sets_deduplicated(fly):
    ids = fly.synapses([ROOT_AB, ROOT_C1, ROOT_C2], [ROOT_AB, ROOT_C1]).column("id").to_pylist()
    assert ids == [501, 502, 503]
    assert fly.synapses([ROOT_AB], [ROOT_AB]).num_rows == 0  # pre AND post must match


def test_synapses_live_query_at_as_of(human, cave_server):
    n = len(cave_server.requests)
    table = human.synapses([ROOT_AB, ROOT_C1], [ROOT_AB, ROOT_C1])
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [601, 602]
    assert rows[0]["ctr_pt_position_nm"] == pytest.approx([11 * RES[0], 11 * RES[1], 2 * RES[2]])
    assert "cleft_score" not in table.column_names and "connection_score" not in table.column_names  # has neither
    assert "gaba" not in table.column_names
    paths = [p for _, p, _, _ in cave_server.requests[n:]]
    assert any(p.endswith("/version/2/table/synapses_pni/query") for p in paths)  # latest version before as_of
    assert any(p.endswith("/past_id_mapping") for p in paths)  # live-query machinery exercised


# ---------------------------------------------------------------- level-2 graph
def test_skeleton_from_level2_graph(fly):
    skel = fly.skeleton(ROOT_AB)
    assert isinstance(skel, Skeleton)
    assert skel.vertices_nm.shape == (7, 3) and skel.vertices_nm.dtype == np.float64
    assert skel.edges.shape == (6, 2) and skel.edges.dtype == np.int64
    degree = np.bincount(skel.edges.ravel(), minlength=len(skel.vertices_nm))
    branch = np.flatnonzero(degree >= 3)
    assert branch.size == 1
    assert skel.vertices_nm[branch[0]].tolist() == [100.0, 100.0, 200.0]
    empty = fly.skeleton(ROOT_C1)
    assert empty.vertices_nm.shape == (0, 3) and empty.edges.shape == (0, 2)


# ---------------------------------------------------------------- CloudVolume
def test_volume_geometry_from_segmentation_info(fly):
    assert fly.base_resolution_nm() == (8.0, 8.0, 40.0)
    assert fly.canonical_bbox_nm() == ((0.0, 0.0, 0.0), (512.0, 512.0, 640.0))


def test_em_cutout_zero_padded_outside_volume(fly):
    cut = fly.em_cutout(np.array([0.0, 0.0, 0.0]), 160.0)
    assert isinstance(cut, Cutout)
    assert cut.data.dtype == np.uint8 and cut.data.shape == (20, 20, 4)
    assert cut.voxel_nm == (8.0, 8.0, 40.0) and cut.origin_nm == (-80.0, -80.0, -80.0)
    inside = cut.data[10:, 10:, 2:]
    x, y, z = np.meshgrid(np.arange(10), np.arange(10), np.arange(2), indexing="ij")
    assert np.array_equal(inside, em_value(x, y, z))
    assert not cut.data[:10].any() and not cut.data[:, :10].any() and not cut.data[:, :, :2].any()


def test_segmentation_cutout_resolves_roots_at_timestamp(fly):
    center = np.array([256.0, 256.0, 320.0])  # straddles the SV_A / SV_B border at x = 32 voxels
    before = fly.segmentation_cutout(center, 160.0, T_MERGE - 1)
    after = fly.segmentation_cutout(center, 160.0, T_MERGE + 1)
    assert before.data.dtype == np.uint64 and before.data.shape == (20, 20, 4)
    assert np.all(before.data[:10] == ROOT_A) and np.all(before.data[10:] == ROOT_B)
    assert np.all(after.data == ROOT_AB)


def test_mesh_in_nm_and_missing_mesh(fly):
    mesh = fly.mesh(ROOT_AB)
    assert isinstance(mesh, trimesh.Trimesh)
    assert mesh.vertices.shape == (4, 3) and mesh.faces.shape == (4, 3)
    assert np.ptp(mesh.vertices[:, 2]) == pytest.approx(400.0)
    with pytest.raises(SampleError) as err:
        fly.mesh(ROOT_NO_MESH)
    assert err.value.reason == "missing_mesh"


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
    assert url in str(err.value) and "config/fly.yaml" in str(err.value)


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


def test_server_error_is_transient(fly, cave_server, waits):
    fly.as_of()
    cave_server.faults["/lvl2_graph"] = 500
    with pytest.raises(TransientSourceError, match="HTTP 500"):
        fly.skeleton(ROOT_AB)
    cave_server.faults["/lvl2_graph"] = 503  # resent a few times by the adaptive layer, then raised
    before, waits[:] = len(cave_server.paths("/lvl2_graph")), []
    with pytest.raises(TransientSourceError, match="HTTP 503"):
        fly.skeleton(ROOT_AB)
    sent = len(cave_server.paths("/lvl2_graph")) - before
    assert sent == adaptive.ONE_ITEM_TRIES  # bounded: the adaptive layer's sends, none by urllib3 or the runner
    assert sum(waits) <= sum(adaptive.BACKOFF_S * 2**k for k in range(sent))  # and short


def test_lost_connection_after_first_contact_is_transient(make_cfg):
    from tests.pipeline.sources.cave_server import ReplayServer

    server = ReplayServer().start()
    # the whole datastack on the second server (the start-up check would refuse a mixed config)
    cfg = make_cfg(server_address=server.url, seg_cloudpath=f"graphene://{server.url}/segmentation/table/{TABLE_ID}")
    src = CaveSource(cfg, token=TOKEN)
    assert src.proofread_roots()  # first contact with this server
    server.stop()
    with pytest.raises(TransientSourceError):
        src.change_log([ROOT_AB])


def test_auth_errors_ask_for_a_token_without_printing_it(make_cfg, cave_server):
    with pytest.raises(UserError) as err:
        CaveSource(make_cfg(), token=None).proofread_roots()  # no token anywhere: the server says 401
    msg = str(err.value)
    assert "CAVE_TOKEN" in msg and "cave-secret.json" in msg
    cave_server.faults["/tabular_change_log_many"] = 403
    with pytest.raises(UserError) as err:
        CaveSource(make_cfg(), token=TOKEN).change_log([ROOT_AB])
    assert "token" in str(err.value) and TOKEN not in str(err.value)


def test_token_from_environment(make_cfg, monkeypatch):
    monkeypatch.setenv("CAVE_TOKEN", TOKEN)
    assert CaveSource(make_cfg()).proofread_roots() == sorted([ROOT_AB, ROOT_C1])


def test_token_never_written_to_disk(make_cfg, isolated_home, tmp_path):
    src = CaveSource(make_cfg(), token=TOKEN)
    src.proofread_roots()
    src.change_log([ROOT_AB])
    src.mesh(ROOT_AB)
    src.segmentation_cutout(np.array([256.0, 256.0, 320.0]), 80.0, T_MERGE + 1)
    assert TOKEN not in repr(src)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert not (isolated_home / ".cloudvolume" / "secrets").exists()


# ---------------------------------------------------------------- absent chunks (fill_missing=False)
def test_absent_chunks_are_marked_missing_on_the_https_and_graphene_paths(fly, cave_server):
    """A chunk the server answers 404 for is absent: zeros there, marked in `missing`; the others are data.
    Chunks are 32 x 32 x 16 voxels; the cutout [12, 52) x [12, 52) x [4, 12) touches 4 of them."""
    center = np.array([256.0, 256.0, 320.0])
    whole = fly.em_cutout(center, 320.0)
    assert whole.missing is None
    cave_server.faults["/em/8_8_40/32-64_0-32_0-16"] = 404
    cave_server.faults["/ws/8_8_40/0-32_32-64_0-16"] = 404
    em = fly.em_cutout(center, 320.0)
    seg = fly.segmentation_cutout(center, 320.0, T_MERGE - 1)
    assert em.data.shape == (40, 40, 8) and em.origin_nm == (96.0, 96.0, 160.0)
    want_em = np.zeros((40, 40, 8), bool)
    want_em[20:, :20] = True  # x >= 32, y < 32 voxels
    assert np.array_equal(em.missing, want_em)
    assert not em.data[want_em].any() and np.array_equal(em.data[~want_em], whole.data[~want_em])
    want_seg = np.zeros((40, 40, 8), bool)
    want_seg[:20, 20:] = True  # x < 32, y >= 32
    assert np.array_equal(seg.missing, want_seg)
    assert not seg.data[want_seg].any() and np.all(seg.data[~want_seg] != 0)


def test_a_server_error_on_a_chunk_is_not_a_missing_chunk(fly, cave_server, monkeypatch):
    # cloud-files retries a 5xx 7 times with random exponential waits (~20 s here): the same retries, no waits
    monkeypatch.setattr(HttpInterface.get_file.retry, "wait", tenacity.wait_none())
    fly.em_cutout(np.array([256.0, 256.0, 320.0]), 80.0)  # reach the server first: later errors are transient
    cave_server.faults["/em/8_8_40/"] = 503
    with pytest.raises(TransientSourceError):
        fly.em_cutout(np.array([256.0, 256.0, 320.0]), 80.0)


def test_padding_outside_the_bounds_is_not_missing(fly):
    cut = fly.em_cutout(np.array([0.0, 0.0, 0.0]), 160.0)
    assert cut.missing is None and not cut.data[:10].any()
