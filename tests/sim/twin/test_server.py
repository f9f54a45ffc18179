"""The twin's endpoints, answers and limits, seen from raw HTTP and from the real clients."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
import requests

from sim.twin import TOKEN, Fault, TwinServer, serve_twin
from sim.twin.info import DATASTACK, TABLE_ID
from sim.twin.log import summarize

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CG = f"/segmentation/api/v1/table/{TABLE_ID}"
MAT = f"/materialize/api/v3/datastack/{DATASTACK}"


def _get(twin, path: str, **kw) -> requests.Response:
    return requests.get(twin.url + path, headers={**AUTH, **kw.pop("headers", {})}, timeout=10, **kw)


def _query(twin, body: dict, version: int = 3, table: str = "synapses") -> requests.Response:
    return requests.post(
        f"{twin.url}{MAT}/version/{version}/table/{table}/query",
        params={"split_positions": "True", "return_pyarrow": "True", "arrow_format": "True"},
        data=json.dumps(body),
        headers={**AUTH, "Accept-Encoding": "zstd", "Content-Type": "application/json"},
        timeout=10,
    )


def _rows(resp: requests.Response) -> pa.Table:
    assert resp.headers["Content-Type"] == "data.arrow"
    with pa.ipc.open_stream(resp.content) as reader:
        return reader.read_all()


def test_token_on_the_apis_not_on_the_buckets(twin):
    assert requests.get(f"{twin.url}/info/api/v2/datastack/full/{DATASTACK}", timeout=10).status_code == 401
    assert _get(twin, f"/info/api/v2/datastack/full/{DATASTACK}").json()["local_server"] == twin.url
    assert requests.get(f"{twin.url}/em/info", timeout=10).status_code == 200
    assert requests.get(f"{twin.url}/ws/mesh/info", timeout=10).status_code == 404  # legacy meshes are not served
    info = _get(twin, f"/segmentation/table/{TABLE_ID}/info").json()
    assert info["data_dir"] == f"{twin.url}/ws" and info["graph"]["chunk_size"] == [64, 64, 40]
    sharded = requests.get(f"{twin.url}/ws/{info['mesh']}/info", timeout=10).json()
    assert ("sharding" in sharded) == (twin.flavor == "v2")


def test_url_limit_and_the_request_log(twin):
    n = len(twin.requests)
    ids = json.dumps(list(range(10**6, 10**6 + 1000)))
    assert _get(twin, f"{CG}/operation_details", params={"operation_ids": ids}).status_code == 414
    assert _get(twin, f"{CG}/operation_details", params={"operation_ids": "[1, 2]"}).status_code == 200
    big, small = twin.requests[n:]
    assert big.status == 414 and big.url_bytes > twin.limits.url_bytes and big.path.endswith("/operation_details")
    assert small.status == 200 and small.bytes_sent == len(b"{}\n") and small.method == "GET"
    assert summarize([big, small])["/segmentation/api"]["requests"] == 2


def test_change_log_bound_answers_504(twin):
    twin.limits = dataclasses.replace(twin.limits, change_log_roots=3)
    roots = [int(r) for r in twin.world.root_ids[:4]]
    resp = _get(twin, f"{CG}/tabular_change_log_many", data=json.dumps({"root_ids": roots}))
    assert resp.status_code == 504
    ok = _get(twin, f"{CG}/tabular_change_log_many", data=json.dumps({"root_ids": roots[:3]}))
    assert ok.status_code == 200 and set(ok.json()) == {str(r) for r in roots[:3]}
    frame = json.loads(next(v for v in ok.json().values()))
    assert set(frame) >= {"operation_id", "timestamp", "before_root_ids", "after_root_ids", "is_merge"}


def test_row_cap_truncates_and_warns(twin):
    twin.limits = dataclasses.replace(twin.limits, row_cap=5)
    capped = _query(twin, {})
    assert len(_rows(capped)) == 5 and "Limited query to 5 rows" in capped.headers["Warning"]
    roots = [int(r) for r in twin.world.table("synapses", 3)["pre_pt_root_id"].to_pylist()[:1]]
    body = {"filter_in_dict": {"synapses": {"pre_pt_root_id": roots}}, "desired_resolution": [1, 1, 1]}
    small = _query(twin, {**body, "select_columns": ["id", "ctr_pt_position"]})
    got = _rows(small)
    assert "Warning" not in small.headers and 0 < len(got) < 5
    assert got.column_names == ["id", "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]
    assert small.headers["dataframe_resolution"] == "1.0, 1.0, 1.0"
    assert pa.types.is_int64(_rows(_query(twin, {"limit": 1})).schema.field("pre_pt_root_id").type)  # bigint
    assert _query(twin, {}, version=1).status_code == 404  # expired
    bad = _query(twin, {"filter_in_dict": {"synapses": {"no_such_column": [1]}}})
    assert bad.status_code == 400 and "no_such_column" in bad.text


def test_roots_at_milliseconds_end_inclusive(twin):
    op = next(o for o in twin.world.ops.values())

    def roots(t: float) -> list[int]:
        body = np.asarray(op.edge, dtype=np.uint64).tobytes()
        resp = requests.post(f"{twin.url}{CG}/roots_binary", params={"timestamp": repr(t)}, data=body, headers=AUTH,
                             timeout=10)  # fmt: skip
        return sorted(set(np.frombuffer(resp.content, dtype=np.uint64).tolist()))

    after, before = sorted(op.after), sorted(op.before)
    assert roots(op.timestamp) == (after if op.is_merge else sorted(set(after)))
    assert roots(op.timestamp + 0.0009) == roots(op.timestamp)  # rounded down to the same ms
    assert roots(op.timestamp - 0.0004) == before  # rounded down to T - 1 ms: before the edit
    assert roots(op.timestamp - 0.001) == before


def test_manifests_per_flavour(twin):
    root = twin.world.summary["long_neurons"][0]["root_id"]
    whole = _get(twin, f"/meshing/api/v1/table/{TABLE_ID}/manifest/{root}:0", params={"verify": "True"}).json()
    lo = twin.world.frag_chunk[twin.world.fragment_rows(root)[0]]
    from sim.twin import ids

    box_lo, _ = ids.chunk_box_vx(lo)
    bounds = "_".join(f"{a}-{a + 10}" for a in box_lo)
    boxed = _get(
        twin, f"/meshing/api/v1/table/{TABLE_ID}/manifest/{root}:0", params={"verify": "True", "bounds": bounds,
        "return_seg_ids": "1"}, data=json.dumps({"start_layer": 2}),
    ).json()  # fmt: skip
    if twin.flavor == "v1":  # bounds parsed and ignored, no seg_ids, legacy names
        assert boxed == whole and all(":0:" in f for f in whole["fragments"])
        return
    assert len(boxed["fragments"]) == 1 and boxed["fragments"][0].startswith("~2/")
    assert len(boxed["seg_ids"]) == 1 and boxed["seg_ids"][0] in twin.world.frag_l2
    assert len(whole["fragments"]) > 10
    below = _get(twin, f"/meshing/api/v1/table/{TABLE_ID}/manifest/{root}:0", params={"verify": "True"},
                 data=json.dumps({"start_layer": 1})).json()  # fmt: skip
    assert below["fragments"] == []
    # without verify: the speculative `~{id}:{layer}:{chunk id}:{shard file}:{minishard}` entries
    fast = _get(twin, f"/meshing/api/v1/table/{TABLE_ID}/manifest/{root}:0", params={"return_seg_ids": "1"}).json()
    assert len(fast["fragments"]) == len(fast["seg_ids"]) == len(whole["fragments"])
    for entry, seg in zip(fast["fragments"], fast["seg_ids"], strict=True):
        assert entry.startswith(f"~{seg}:2:") and entry.count(":") == 4 and ".shard:" in entry


def test_byte_ranges_and_gzip_chunks(twin):
    if twin.flavor == "v1":
        name = twin.world.frag_v1[0]
        info = _get(twin, f"/segmentation/table/{TABLE_ID}/info").json()
        resp = requests.get(f"{twin.url}/ws/{info['mesh']}/{name}", timeout=10)
        assert resp.status_code == 200 and len(resp.content) == twin.world.frag_bytes[0]
    else:
        path, offset, size = twin.world.frag_v2[0][1:].rsplit(":", 2)
        url = f"{twin.url}/ws/graphene_meshes/initial/{path}"
        end = int(offset) + int(size) - 1
        part = requests.get(url, headers={"Range": f"bytes={offset}-{end}"}, timeout=10)
        whole = requests.get(url, timeout=10).content
        assert part.status_code == 206 and part.content == whole[int(offset) : end + 1]
        assert part.headers["Content-Range"] == f"bytes {offset}-{end}/{len(whole)}"
    x, y, z = twin.world.summary["geometry"]["sites_vx"][0]
    chunk = requests.get(f"{twin.url}/em/32_32_45/{x}-{x + 64}_{y}-{y + 64}_{z}-{z + 40}", timeout=10)
    assert chunk.status_code == 200 and len(chunk.content) == 64 * 64 * 40  # decoded from Content-Encoding: gzip


def test_history_endpoints_through_caveclient(twin):
    from caveclient import CAVEclient

    client = CAVEclient(DATASTACK, server_address=twin.url, auth_token=TOKEN, write_server_cache=False)
    cg = client.chunkedgraph
    first = min(op.timestamp for op in twin.world.ops.values())
    assert cg.get_oldest_timestamp() == dt.datetime.fromtimestamp(first - 0.5, tz=dt.timezone.utc)
    as_of = dt.datetime.fromtimestamp(twin.world.summary["time"]["as_of"], tz=dt.timezone.utc)
    old, new = cg.get_delta_roots(cg.get_oldest_timestamp(), as_of)
    assert set(new.tolist()) == {r for op in twin.world.ops.values() for r in op.after}
    assert set(old.tolist()) == {r for op in twin.world.ops.values() for r in op.before}
    op = next(o for o in twin.world.ops.values() if o.is_merge)
    (after,) = op.after
    assert cg.get_root_timestamps([after])[0] == dt.datetime.fromtimestamp(op.timestamp, tz=dt.timezone.utc)
    assert cg.is_latest_roots(list(op.before), timestamp=as_of).tolist() == [False, False]
    details = cg.get_operation_details([op.operation_id])[str(op.operation_id)]
    assert details["added_edges"] == [list(op.edge)] and details["roots"] == [after]
    assert ("operation_ts" in details) == (twin.flavor == "v2")
    versions = client.materialize.get_versions()
    assert sorted(versions) == [2, 3] and sorted(client.materialize.get_versions(expired=True)) == [1, 2, 3]


def test_latency_is_added_to_every_request(twin):
    twin.limits = dataclasses.replace(twin.limits, latency_ms=150)
    n = len(twin.requests)
    _get(twin, "/info/api/versions")
    requests.get(f"{twin.url}/em/info", timeout=10)
    assert all(r.duration_ms >= 150 for r in twin.requests[n:])


def test_jsonl_log_for_the_cli(twin_world, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = TwinServer(twin_world, flavor="v1", log_path=log).start()
    try:
        requests.get(f"{server.url}/em/info", timeout=10)
        requests.get(f"{server.url}/nothing", timeout=10)
    finally:
        server.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["path"], r["status"]) for r in lines] == [("/em/info", 200), ("/nothing", 401)]
    assert lines[0]["bytes_sent"] > 0 and set(lines[0]) >= {"method", "query", "url_bytes", "duration_ms"}


def test_unknown_flavour_is_refused(twin_world):
    with pytest.raises(ValueError, match="flavor"):
        TwinServer(twin_world, flavor="v3")


def test_faults_answer_first_as_many_times_as_asked(twin_world):
    """A test's faults (faults.py): the first matching rule with uses left answers, before the token check; its
    status, body, content type and headers; a reset loses the connection mid-body; every answer is logged."""
    rules = [
        Fault(r"/lvl2_graph$", status=429, headers={"Retry-After": "3"}, times=2),
        Fault(r"/lvl2_graph$", status=502, body=b"<html>bad gateway</html>", content_type="text/html", times=1),
        Fault(r"^/em/info$", status=200, body=b"", method="GET"),
        Fault(r"/datastack/full/", status=200, body=b"[" + b"1," * 5000 + b"1]", reset=True, times=1),
    ]
    with serve_twin(twin_world, faults=rules) as twin:
        url = f"{twin.url}{CG}/node/1/lvl2_graph"
        got = [requests.get(url, timeout=10) for _ in range(4)]  # without a token: the faults answer first
        assert [r.status_code for r in got] == [429, 429, 502, 401]
        assert got[0].headers["Retry-After"] == "3" and got[0].json()["code"] == 429
        assert got[2].text == "<html>bad gateway</html>" and got[2].headers["Content-Type"] == "text/html"
        assert requests.get(f"{twin.url}/em/info", timeout=10).content == b""  # an empty answer
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _get(twin, f"/info/api/v2/datastack/full/{DATASTACK}").content  # noqa: B018 - read the whole body
        assert _get(twin, f"/info/api/v2/datastack/full/{DATASTACK}").json()["local_server"] == twin.url
        assert [r.status for r in twin.requests] == [429, 429, 502, 401, 200, 200, 200]
        assert [rule.hits for rule in rules] == [2, 1, 1, 1]
        twin.app.faults.clear()
        assert requests.get(f"{twin.url}/em/info", timeout=10).json()["type"] == "image"
        twin.app.faults.add(Fault(r"^/em/", status=404, method="POST"))  # another method: not this rule
        assert requests.get(f"{twin.url}/em/info", timeout=10).status_code == 200
