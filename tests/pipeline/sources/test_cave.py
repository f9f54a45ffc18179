"""CaveSource against the twin on the tiny world: pinning, what the answers are normalised to, and what the
source makes of a server that refuses, is gone, or wants a token.

The real caveclient and cloud-volume talk HTTP to the twin (both server generations where the answer differs
by generation). What a server does when something is wrong on its side is set on the twin by hand
(`twin.faults`, pipeline/sim/twin/faults.py). The answers themselves are compared with DemoSource on the same
world in test_cave_twin.py; here, the source's own rules.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
import tenacity
from cloudfiles.interfaces import HttpInterface

from config.schema import load_config
from pipeline.core.errors import SampleError, TransientSourceError, UserError
from pipeline.sim.twin import TOKEN, TwinServer
from pipeline.sim.twin.species import LATEST_VERSION, twin_config
from pipeline.sources import adaptive
from pipeline.sources.base import CHANGE_LOG_COLUMNS, Skeleton
from pipeline.sources.cave import CaveSource
from pipeline.sources.demo import DemoSource
from tests.conftest import free_port


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs):
    return load_config("demo", tiny_configs)


@pytest.fixture(scope="module")
def demo(demo_cfg, twin_world):
    return DemoSource(demo_cfg, twin_world)


@pytest.fixture()
def make(twin, demo_cfg):
    """A CaveSource against the twin; keyword overrides replace config keys, `token=None` sends none."""

    def make_source(token: str | None = TOKEN, **overrides) -> CaveSource:
        return CaveSource(twin_config(demo_cfg, twin.url, twin.flavor, **overrides), token=token)

    return make_source


@pytest.fixture()
def faults(twin):
    """The twin's hand-set faults, cleared after the test (the twin is shared by the session)."""
    twin.faults.clear()
    yield twin.faults
    twin.faults.clear()


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


def _since(twin, n: int, part: str) -> list:
    return [r for r in twin.requests[n:] if part in r.path]


# ---------------------------------------------------------------- pinning and proofread roots
def test_as_of_and_proofread_roots_are_pinned_to_the_version(make, twin, demo):
    cave = make()
    version = twin.world.version(LATEST_VERSION)
    assert cave.as_of() == pytest.approx(version.timestamp)
    n = len(twin.requests)
    assert cave.proofread_roots() == demo.proofread_roots()
    queries = [r.path for r in _since(twin, n, "/query")]
    assert queries and all(f"/version/{LATEST_VERSION}/table/proofread_neurons/" in p for p in queries)


def test_proofread_roots_from_delta_roots(make, twin, demo):
    """Pinned to a time with no proofreading table (as human and zebrafish): the roots made by edits up to as_of,
    minus the ones edits replaced."""
    cave = make(as_of=demo.as_of(), materialization_version=None, proofread_table=None,
                proofread_from_delta_roots=True)  # fmt: skip
    n = len(twin.requests)
    roots = cave.proofread_roots()
    old, new = twin.world.delta_roots(None, int(round(demo.as_of() * 1000)))
    assert roots == sorted(set(map(int, new)) - set(map(int, old))) and roots
    delta = [r for r in _since(twin, n, "/delta_roots")]
    assert len(delta) == 1 and "timestamp_future" in delta[0].query


# ---------------------------------------------------------------- what the answers are normalised to
def test_change_log_normalised(make, demo):
    cave = make()
    roots = demo.proofread_roots()
    table = cave.change_log(roots)
    assert isinstance(table, pa.Table) and table.num_rows > 0
    assert table.column_names[: len(CHANGE_LOG_COLUMNS)] == list(CHANGE_LOG_COLUMNS)
    assert table.schema.field("root_id").type == pa.uint64()
    assert table.schema.field("operation_id").type == pa.int64()
    assert table.schema.field("timestamp").type == pa.float64()
    assert table.schema.field("is_merge").type == pa.bool_()
    assert table.schema.field("before_root_ids").type == pa.list_(pa.uint64())
    assert table.schema.field("after_root_ids").type == pa.list_(pa.uint64())
    assert set(table["root_id"].to_pylist()) <= set(roots)
    assert cave.change_log([]).num_rows == 0


def test_operation_details_after_change_log_agree_with_details_alone(make, demo):
    """A worker that has seen the change log and a fresh one give the same before roots (their order may differ:
    the bank takes the change log's, pipeline/candidates.py) and times; an unknown operation is left out."""
    roots = demo.proofread_roots()
    warm = make()
    ops = sorted(set(warm.change_log(roots)["operation_id"].to_pylist()))
    with_log, alone = warm.operation_details([*ops, 10**9]), make().operation_details(ops)
    assert set(with_log) == set(alone) == set(ops)
    for op in ops:
        assert set(with_log[op].before_root_ids) == set(alone[op].before_root_ids)
        assert with_log[op].timestamp == alone[op].timestamp


def test_roots_at_is_time_resolved(make, demo):
    """Each supervoxel's root just before a merge and at it, as uint64 in the input's shape; 0 stays 0."""
    cave = make()
    ops = demo.operation_details([int(o) for o in demo._table("operations")["operation_id"].to_pylist()])
    merge = next(o for o in ops.values() if o.is_merge and len(o.before_root_ids) == 2)
    t = merge.timestamp
    svs = [int(s) for root in merge.before_root_ids for s in demo.supervoxels_of(root, t - 1)[:2]]
    svs = np.array([[s, 0] for s in svs], dtype=np.uint64)
    before, after = cave.roots_at(svs, t - 1), cave.roots_at(svs, t)
    assert before.dtype == np.uint64 and before.shape == svs.shape
    assert set(before[:, 0].tolist()) == set(merge.before_root_ids) and not before[:, 1].any()
    assert set(after[:, 0].tolist()) == set(merge.after_root_ids) and not after[:, 1].any()
    assert np.array_equal(before, demo.roots_at(svs, t - 1)) and np.array_equal(after, demo.roots_at(svs, t))


def test_skeleton_is_a_graph_in_nm(make, demo):
    cave = make()
    skel = cave.skeleton(demo.proofread_roots()[0])
    assert isinstance(skel, Skeleton)
    assert skel.vertices_nm.dtype == np.float64 and skel.vertices_nm.shape[1] == 3 and len(skel.vertices_nm)
    assert skel.edges.dtype == np.int64 and skel.edges.shape[1] == 2
    assert skel.edges.min() >= 0 and skel.edges.max() < len(skel.vertices_nm)


# ---------------------------------------------------------------- CloudVolume
def test_em_cutout_zero_padded_outside_volume_and_padding_is_not_missing(make, demo):
    """A window over the volume's corner: the part outside the bounds is zeros and not marked missing."""
    cave = make()
    lo, _hi = cave.canonical_bbox_nm()
    cut, ref = cave.em_cutout(np.array(lo), 1000.0), demo.em_cutout(np.array(lo), 1000.0)
    assert cut.data.dtype == np.uint8 and np.array_equal(cut.data, ref.data) and cut.origin_nm == ref.origin_nm
    assert cut.data.shape == ref.data.shape and min(cut.data.shape[:2]) >= 30  # the whole window, not the inside
    half = cut.data.shape[0] // 2
    assert not cut.data[:half].any() and not cut.data[:, :half].any()  # the outside is zeros
    # outside the bounds is padding, never an absent chunk (the world has no chunk at its corner: those are)
    missing = cut.missing if cut.missing is not None else np.zeros(cut.data.shape, bool)
    assert not missing[:half].any() and not missing[:, :half].any()
    assert np.array_equal(missing, ref.missing if ref.missing is not None else np.zeros(cut.data.shape, bool))


def test_mesh_in_nm_and_a_root_without_mesh_is_missing_mesh(make, demo, twin, twin_world):
    import json

    cave = make()
    summary = json.loads((twin_world / "world.json").read_text())
    no_mesh = summary["defects"]["roots_without_mesh"]
    root = next(r for r in demo.proofread_roots() if r not in no_mesh)
    mesh, ref = cave.mesh(root), demo.mesh(root)
    assert len(mesh.faces) and np.allclose(mesh.bounds, ref.bounds, atol=twin.cache_summary["draco_bin_nm"])
    with pytest.raises(SampleError) as err:
        cave.mesh(no_mesh[0])
    assert err.value.reason == "missing_mesh"


# ---------------------------------------------------------------- absent chunks (fill_missing=False)
def _chunk_box(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A precomputed chunk's voxel box from its file name `x0-x1_y0-y1_z0-z1`."""
    pairs = np.array([[int(v) for v in p.split("-")] for p in path.rsplit("/", 1)[1].split("_")])
    return pairs[:, 0], pairs[:, 1]


@pytest.mark.parametrize("layer", ["em", "ws"])
def test_an_absent_chunk_is_zeros_and_marked_missing_the_rest_is_data(make, demo, twin, faults, layer):
    """A chunk the bucket answers 404 for is absent: zeros there, marked in `missing`; every other voxel is the
    data a whole read gives (the EM over https, the segmentation's supervoxels over graphene)."""
    cave = make()
    ops = demo.operation_details([int(o) for o in demo._table("operations")["operation_id"].to_pylist()])
    op = next(o for o in ops.values() if o.source_coords_vx)
    point = np.asarray(op.source_coords_vx[0]) * np.array(demo.base_resolution_nm())

    def cut():
        return cave.em_cutout(point, 1800.0) if layer == "em" else cave.segmentation_cutout(point, 1800.0,
                                                                                          op.timestamp)  # fmt: skip

    n = len(twin.requests)
    whole = cut()
    assert whole.missing is None
    read = sorted({r.path for r in _since(twin, n, f"/{layer}/") if r.status == 200})
    assert len(read) >= 2  # the cutout spans several chunks: one goes missing, the others stay
    faults.add(read[0], 404)
    part = cut()
    lo, hi = _chunk_box(read[0])
    origin = np.round(np.asarray(part.origin_nm) / np.asarray(part.voxel_nm)).astype(int)
    want = np.zeros(part.data.shape, bool)
    a, b = np.maximum(lo - origin, 0), np.minimum(hi - origin, part.data.shape)
    want[a[0]: b[0], a[1]: b[1], a[2]: b[2]] = True
    assert want.any() and not want.all()
    assert np.array_equal(part.missing, want)
    assert not part.data[want].any() and np.array_equal(part.data[~want], whole.data[~want])


def test_a_server_error_on_a_chunk_is_not_a_missing_chunk(make, demo, faults, monkeypatch):
    # cloud-files retries a 5xx 7 times with random exponential waits (~20 s here): the same retries, no waits
    monkeypatch.setattr(HttpInterface.get_file.retry, "wait", tenacity.wait_none())
    cave = make()
    point = np.asarray(demo.canonical_bbox_nm()[0]) + 5000.0
    cave.em_cutout(point, 500.0)  # reach the server first: later errors are transient
    faults.add("/em/", 503)
    with pytest.raises(TransientSourceError):
        cave.em_cutout(point, 500.0)


# ---------------------------------------------------------------- errors
def test_unreachable_server_is_a_user_error_naming_the_url(make, waits):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as err:
        make(server_address=url).proofread_roots()
    assert sum(waits) == 0  # no retries with backoff before the one line
    assert url in str(err.value) and "config/demo.yaml" in str(err.value)


def test_unreachable_em_host_is_a_user_error(make, waits):
    url = f"http://127.0.0.1:{free_port()}/em"
    with pytest.raises(UserError, match="could not reach.*em_cloudpath"):
        make(em_cloudpath=f"precomputed://{url}").em_cutout(np.zeros(3), 100.0)
    assert sum(waits) == 0


def test_unresolvable_host_is_a_user_error(make, waits):
    url = "http://cb2-twin-test.invalid"
    with pytest.raises(UserError) as err:
        make(server_address=url).as_of()
    assert url in str(err.value) and sum(waits) == 0


def test_server_error_is_transient_and_resent_a_bounded_number_of_times(make, demo, twin, faults, waits):
    cave = make()
    root = demo.proofread_roots()[0]
    cave.as_of()
    faults.add("/lvl2_graph", 500)
    with pytest.raises(TransientSourceError, match="HTTP 500"):
        cave.skeleton(root)
    faults.clear()
    faults.add("/lvl2_graph", 503)  # resent a few times by the adaptive layer, then raised
    n, waits[:] = len(twin.requests), []
    with pytest.raises(TransientSourceError, match="HTTP 503"):
        cave.skeleton(root)
    sent = len(_since(twin, n, "/lvl2_graph"))
    assert sent == adaptive.ONE_ITEM_TRIES  # bounded: the adaptive layer's sends, none by urllib3 or the runner
    assert sum(waits) <= sum(adaptive.BACKOFF_S * 2**k for k in range(sent))  # and short


def test_lost_connection_after_first_contact_is_transient(demo_cfg, twin_world):
    server = TwinServer(twin_world, flavor="v2").start()
    cave = CaveSource(twin_config(demo_cfg, server.url), token=TOKEN)
    roots = cave.proofread_roots()  # first contact with this server
    server.stop()
    with pytest.raises(TransientSourceError):
        cave.change_log(roots[:1])


def test_auth_errors_ask_for_a_token_without_printing_it(make, demo, faults):
    with pytest.raises(UserError) as err:
        make(token=None).proofread_roots()  # no token anywhere: the server says 401
    assert "CAVE_TOKEN" in str(err.value) and "cave-secret.json" in str(err.value)
    faults.add("/tabular_change_log_many", 403)
    with pytest.raises(UserError) as err:
        make().change_log(demo.proofread_roots()[:1])
    assert "token" in str(err.value) and TOKEN not in str(err.value)


def test_token_from_environment(make, demo, monkeypatch):
    monkeypatch.setenv("CAVE_TOKEN", TOKEN)
    assert make(token=None).proofread_roots() == demo.proofread_roots()


def test_token_never_written_to_disk(make, demo, isolated_home, tmp_path, twin_world):
    import json

    cave = make()
    roots = cave.proofread_roots()
    cave.change_log(roots[:1])
    no_mesh = json.loads((twin_world / "world.json").read_text())["defects"]["roots_without_mesh"]
    cave.mesh(next(r for r in roots if r not in no_mesh))
    cave.segmentation_cutout(np.asarray(demo.canonical_bbox_nm()[0]) + 5000.0, 400.0, demo.as_of())
    assert TOKEN not in repr(cave)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert not (isolated_home / ".cloudvolume" / "secrets").exists()
