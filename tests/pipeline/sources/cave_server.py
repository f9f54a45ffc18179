"""A replay server for CaveSource tests: the real caveclient and cloud-volume talk HTTP to it.

It serves the response SHAPES of every endpoint CaveSource uses (paths and parameters as the installed
caveclient 8.x / cloud-volume 12.x send them; see caveclient/endpoints.py), over a tiny made-up world:

- supervoxels SV_A (x < 32) and SV_B (x >= 32) of a 64 x 64 x 16 watershed at 8 x 8 x 40 nm;
  ROOT_A / ROOT_B until merge op 101 at T_MERGE, ROOT_AB after;
- supervoxels SV_C1 / SV_C2 (not in the volume): ROOT_C until split op 102 at T_SPLIT, ROOT_C1 / ROOT_C2 after;
- ROOT_AB's level-2 graph is a "Y": one branch point (degree 3) with three 2-node arms;
- a precomputed uint8 EM layer of the same shape whose voxels are never 0 (so padding shows);
- materialization versions 1 and 2, tables for proofread neurons and two synapse table flavours.

`server.faults[path_substring] = status` makes matching requests fail with that HTTP status;
`server.requests` records (method, path, query, headers) of every request.
"""

from __future__ import annotations

import json
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa

DATASTACK = "test_stack"
TABLE_ID = "test"
TOKEN = "0123456789abcdef0123456789abcdef"

RES = (8, 8, 40)
SIZE = (64, 64, 16)
CHUNK = (32, 32, 16)

L1 = np.uint64(1) << np.uint64(56)
L2 = np.uint64(2) << np.uint64(56)
L10 = np.uint64(10) << np.uint64(56)
SV_A, SV_B, SV_C1, SV_C2 = (int(L1 + np.uint64(k)) for k in (11, 12, 13, 14))
ROOT_A, ROOT_B, ROOT_AB, ROOT_C, ROOT_C1, ROOT_C2, ROOT_TMP = (int(L10 + np.uint64(k)) for k in range(1, 8))
ROOT_NO_MESH = int(L10 + np.uint64(99))

T_MERGE = 1685577600.25  # 2023-06-01T00:00:00.25Z
T_SPLIT = 1690000000.0  # 2023-07-22T04:26:40Z (reported in RFC 1123, whole seconds)
VERSIONS = {1: "2023-01-01T00:00:00.000000", 2: "2024-01-01T00:00:00.000000"}
OLDEST = "2022-01-01T00:00:00+00:00"

# Level-2 graph of ROOT_AB: centre 0, arms (1, 2), (3, 4), (5, 6), each 2 um long (longer than the
# twigs a skeleton prunes: pipeline/sources/l2skeleton.py).
L2_IDS = [int(L2 + np.uint64(100 + i)) for i in range(7)]
L2_EDGES = [(0, 1), (1, 2), (0, 3), (3, 4), (0, 5), (5, 6)]
L2_COORDS = {
    0: [100.0, 100.0, 200.0],
    1: [1100.0, 100.0, 200.0],
    2: [2100.0, 100.0, 200.0],
    3: [100.0, 1100.0, 200.0],
    4: [100.0, 2100.0, 200.0],
    5: [100.0, 100.0, 1200.0],
    6: [100.0, 100.0, 2200.0],
}

OPS = {
    101: {
        "added_edges": [[SV_A, SV_B]],
        "roots": [ROOT_AB],
        "source_coords": [[10, 20, 5]],
        "sink_coords": [[40, 20, 5]],
        "timestamp": "2023-06-01T00:00:00.250000+00:00",
        "user": "7",
    },
    102: {
        "removed_edges": [[SV_C1, SV_C2]],
        "roots": [ROOT_C1, ROOT_C2],
        "source_coords": [[20, 30, 4], [22, 30, 4]],
        "sink_coords": [[50, 30, 4]],
        "timestamp": "Sat, 22 Jul 2023 04:26:40 GMT",
        "user": "8",
    },
}

CHANGE_LOGS = {
    ROOT_AB: [
        {
            "operation_id": 101,
            "timestamp": int(T_MERGE * 1000),
            "user_id": 7,
            "before_root_ids": [ROOT_A, ROOT_B],
            "after_root_ids": [ROOT_AB],
            "is_merge": True,
            "user_name": "u7",
            "user_affiliation": "lab",
        },
    ],
    ROOT_C1: [
        {
            "operation_id": 102,
            "timestamp": int(T_SPLIT * 1000),
            "user_id": 8,
            "before_root_ids": [ROOT_C],
            "after_root_ids": [ROOT_C1],
            "is_merge": False,
            "user_name": "u8",
            "user_affiliation": "lab",
        },
    ],
}

# when each root was made (what root_timestamps answers): the edits' own times
ROOT_CREATED = {ROOT_AB: T_MERGE, ROOT_C1: T_SPLIT, ROOT_C2: T_SPLIT}

DELTA_ROOTS = {"old_roots": [ROOT_A, ROOT_B, ROOT_C, ROOT_TMP], "new_roots": [ROOT_AB, ROOT_C1, ROOT_C2, ROOT_TMP]}


def root_of(sv: int, ts: float) -> int:
    if sv in (SV_A, SV_B):
        return ROOT_AB if ts >= T_MERGE else (ROOT_A if sv == SV_A else ROOT_B)
    if sv in (SV_C1, SV_C2):
        return ROOT_C if ts < T_SPLIT else (ROOT_C1 if sv == SV_C1 else ROOT_C2)
    return 0


def em_value(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return ((x + 2 * y + 3 * z) % 250 + 1).astype(np.uint8)


def _position_rows(n: int, base: tuple[int, int, int]) -> list[list[int]]:
    return [[base[0] + i, base[1] + i, base[2] + (i % 3)] for i in range(n)]


# Tables: columns as the materialization engine stores them (positions in voxels at RES).
TABLES: dict[str, dict[str, list]] = {
    "proofread_neurons": {
        "id": [1, 2],
        "valid": [True, True],
        "pt_supervoxel_id": [SV_A, SV_C1],
        "pt_root_id": [ROOT_AB, ROOT_C1],
        "pt_position": _position_rows(2, (10, 10, 2)),
    },
    "proofread_no_root": {
        "id": [1],
        "valid": [True],
        "valid_id": [ROOT_AB],
        "pt_position": _position_rows(1, (10, 10, 2)),
    },
    "synapses_nt": {
        "id": [501, 502, 503],
        "pre_pt_supervoxel_id": [SV_A, SV_C1, SV_C2],
        "pre_pt_root_id": [ROOT_AB, ROOT_C1, ROOT_C2],
        "post_pt_supervoxel_id": [SV_C1, SV_A, SV_A],
        "post_pt_root_id": [ROOT_C1, ROOT_AB, ROOT_AB],
        "pre_pt_position": [[10, 10, 2], [20, 20, 4], [30, 30, 6]],
        "post_pt_position": [[12, 14, 4], [22, 22, 4], [32, 30, 8]],
        "connection_score": [110.0, 52.0, 7.0],
        "cleft_score": [140.0, 60.0, 55.0],
        "gaba": [0.1, 0.2, 0.3],
        "ach": [0.7, 0.5, 0.4],
        "glut": [0.1, 0.1, 0.1],
        "oct": [0.05, 0.1, 0.1],
        "ser": [0.03, 0.05, 0.05],
        "da": [0.02, 0.05, 0.05],
    },
    "synapses_pni": {
        "id": [601, 602],
        "valid": [True, True],
        "pre_pt_supervoxel_id": [SV_A, SV_C1],
        "pre_pt_root_id": [ROOT_AB, ROOT_C1],
        "post_pt_supervoxel_id": [SV_C1, SV_A],
        "post_pt_root_id": [ROOT_C1, ROOT_AB],
        "pre_pt_position": [[10, 10, 2], [20, 20, 4]],
        "post_pt_position": [[12, 12, 2], [22, 22, 4]],
        "ctr_pt_position": [[11, 11, 2], [21, 21, 4]],
        "size": [300, 400],
    },
    "synapses_no_position": {
        "id": [701],
        "pre_pt_supervoxel_id": [SV_A],
        "pre_pt_root_id": [ROOT_AB],
        "post_pt_supervoxel_id": [SV_C1],
        "post_pt_root_id": [ROOT_C1],
        "size": [10],
    },
}
POSITION_COLUMNS = ("pt_position", "pre_pt_position", "post_pt_position", "ctr_pt_position")


def _scale(size: tuple[int, int, int], encoding: str = "raw") -> dict:
    return {
        "key": "_".join(map(str, RES)),
        "resolution": list(RES),
        "voxel_offset": [0, 0, 0],
        "size": list(size),
        "chunk_sizes": [list(CHUNK)],
        "encoding": encoding,
    }


class ReplayServer:
    def __init__(self) -> None:
        self.faults: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict, dict]] = []
        self.require_token = True
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self, contains: str = "") -> list[str]:
        return [p for _, p, _, _ in self.requests if contains in p]

    # ------------------------------------------------------------------ documents
    def datastack_info(self) -> dict:
        return {
            "aligned_volume": {
                "id": 1,
                "name": "test_av",
                "display_name": "test aligned volume",
                "description": "replay",
                "image_source": f"precomputed://{self.url}/em",
            },
            "segmentation_source": f"graphene://{self.url}/segmentation/table/{TABLE_ID}",
            "local_server": self.url,
            "synapse_table": "synapses_nt",
            "soma_table": None,
            "analysis_database": None,
            "viewer_site": None,
            "viewer_resolution_x": float(RES[0]),
            "viewer_resolution_y": float(RES[1]),
            "viewer_resolution_z": float(RES[2]),
            "skeleton_source": None,
        }

    def em_info(self) -> dict:
        return {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [_scale(SIZE)]}

    def ws_info(self) -> dict:
        return {
            "type": "segmentation",
            "data_type": "uint64",
            "num_channels": 1,
            "mesh": "mesh",
            "scales": [_scale(SIZE)],
        }

    def graphene_info(self) -> dict:
        info = self.ws_info()
        info.update(
            {
                "data_dir": f"{self.url}/ws",
                "app": {"supported_api_versions": [0, 1]},
                "chunks_start_at_voxel_offset": True,
                "graph": {
                    "bounding_box": [2048, 2048, 512],
                    "chunk_size": [64, 64, 64],
                    "cv_mip": 0,
                    "n_bits_for_layer_id": 8,
                    "n_layers": 10,
                    "spatial_bit_masks": {str(i): 10 for i in range(1, 11)},
                },
                "verify_mesh": False,
                "mesh_metadata": {"uniform_draco_grid_size": 21, "unsharded_mesh_dir": "dynamic"},
            }
        )
        return info


def _chunk_bytes(layer: str, name: str) -> bytes | None:
    try:
        xs, ys, zs = (tuple(int(v) for v in part.split("-")) for part in name.split("_"))
    except ValueError:
        return None
    x, y, z = np.meshgrid(np.arange(*xs), np.arange(*ys), np.arange(*zs), indexing="ij")
    sv = np.where(x < 32, np.uint64(SV_A), np.uint64(SV_B)).astype(np.uint64)
    arr = em_value(x, y, z) if layer == "em" else sv
    return np.asfortranarray(arr).tobytes(order="F")


def _legacy_mesh(offset: float) -> bytes:
    verts = np.array([[0, 0, 0], [80, 0, 0], [0, 80, 0], [0, 0, 400]], dtype=np.float32) + np.float32(offset)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], dtype=np.uint32)
    return struct.pack("<I", len(verts)) + verts.tobytes() + faces.tobytes()


def _arrow(columns: dict[str, list]) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _query_table(name: str, body: dict) -> tuple[dict[str, list], str]:
    src = TABLES[name]
    n = len(src["id"])
    keep = np.ones(n, dtype=bool)
    for filt in (body.get("filter_in_dict") or {}).values():
        for col, vals in filt.items():
            if col not in src:
                raise KeyError(col)
            keep &= np.isin(np.asarray(src[col], dtype=np.uint64), np.asarray(vals, dtype=np.uint64))
    desired = body.get("desired_resolution")
    scale = np.asarray(RES, dtype=np.float64) / np.asarray(desired, dtype=np.float64) if desired else np.ones(3)
    out: dict[str, list] = {}
    for col, values in src.items():
        vals = [v for v, k in zip(values, keep, strict=True) if k]
        if col in POSITION_COLUMNS:
            arr = np.asarray(vals, dtype=np.float64).reshape(-1, 3) * scale
            for i, axis in enumerate("xyz"):
                out[f"{col}_{axis}"] = [float(v) for v in arr[:, i]]
        else:
            out[col] = vals
    res = ", ".join(str(float(v)) for v in (desired or RES))
    return out, res


def _make_handler(server: ReplayServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args) -> None:  # quiet
            pass

        # ------------------------------------------------------------ plumbing
        def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", headers)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            path = parsed.path
            query = dict(urllib.parse.parse_qsl(parsed.query))
            body = self._body()
            server.requests.append((self.command, path, query, dict(self.headers)))
            for needle, status in server.faults.items():
                if needle in path:
                    self._json({"message": f"injected {status}"}, status=status)
                    return
            public = path.startswith(("/em/", "/ws/"))
            if server.require_token and not public:
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {TOKEN}":
                    self._json({"error": "unauthorized"}, status=401)
                    return
            try:
                self._route(path, query, body)
            except KeyError as exc:
                self._json({"message": f"unknown column or id {exc}"}, status=400)

        # ------------------------------------------------------------ routes
        def _route(self, path: str, q: dict, body: bytes) -> None:  # noqa: C901 - a flat routing table
            cg = f"/segmentation/api/v1/table/{TABLE_ID}"
            mat = f"/materialize/api/v3/datastack/{DATASTACK}"
            # info service
            if path == "/info/api/versions":
                return self._json([1, 2])
            if path == "/info/version":
                return self._json("4.6.0")
            if path == f"/info/api/v2/datastack/full/{DATASTACK}":
                return self._json(server.datastack_info())
            # chunkedgraph
            if path == "/segmentation/api/versions":
                return self._json([0, 1])
            if path == "/segmentation/api/version":
                return self._json("2.21.0")
            if path == f"/segmentation/table/{TABLE_ID}/info":
                return self._json(server.graphene_info())
            if path == f"{cg}/tabular_change_log_many":
                roots = json.loads(body or b"{}").get("root_ids", [])
                out = {}
                for r in roots:
                    rows = CHANGE_LOGS.get(int(r), [])
                    cols = {k: {str(i): row[k] for i, row in enumerate(rows)} for k in (rows[0] if rows else {})}
                    out[str(r)] = json.dumps(cols)
                return self._json(out)
            if path == f"{cg}/operation_details":
                ids = json.loads(q.get("operation_ids", "[]"))
                return self._json({str(i): OPS[int(i)] for i in ids if int(i) in OPS})
            if path == f"{cg}/roots_binary":
                ts = float(q["timestamp"])
                svs = np.frombuffer(body, dtype=np.uint64)
                roots = np.array([root_of(int(s), ts) for s in svs], dtype=np.uint64)
                return self._send(200, roots.tobytes(), "application/octet-stream")
            if path == f"{cg}/delta_roots":
                if "timestamp_past" not in q or "timestamp_future" not in q:
                    return self._json({"message": "timestamp_past and timestamp_future are required"}, status=400)
                return self._json(DELTA_ROOTS)
            if path == f"{cg}/oldest_timestamp":
                return self._json({"iso": OLDEST})
            if path.startswith(f"{cg}/node/") and path.endswith("/lvl2_graph"):
                root = int(path.split("/")[-2])
                edges = [[L2_IDS[a], L2_IDS[b]] for a, b in L2_EDGES] if root == ROOT_AB else []
                return self._json({"edge_graph": edges})
            if path == f"{cg}/is_latest_roots":
                ids = json.loads(body)["node_ids"]
                return self._json({"is_latest": [int(i) not in DELTA_ROOTS["old_roots"] for i in ids]})
            if path == f"{cg}/root_timestamps":
                ids = json.loads(body)["node_ids"]
                return self._json({"timestamp": [ROOT_CREATED.get(int(i), T_SPLIT + 1.0) for i in ids]})
            if path == f"{cg}/past_id_mapping":
                ids = json.loads(body)["root_ids"]
                return self._json({"past_id_map": {str(i): [i] for i in ids}, "future_id_map": {}})
            # meshing (graphene manifest) and l2cache
            if path.startswith(f"/meshing/api/v1/table/{TABLE_ID}/manifest/"):
                root = int(path.rsplit("/", 1)[-1].split(":")[0])
                frags = [] if root == ROOT_NO_MESH else [f"{root}:0:frag"]
                return self._json({"fragments": frags})
            if path == "/l2cache/api/v1/table_mapping":  # l2cache.has_cache() reads it
                return self._json({TABLE_ID: {"l2cache_id": "test_l2cache", "cv_path": f"graphene://{server.url}"}})
            if path == f"/l2cache/api/v1/table/{TABLE_ID}/attributes":
                ids = json.loads(body)["l2_ids"]
                out = {}
                for i in ids:
                    k = L2_IDS.index(int(i)) if int(i) in L2_IDS else None
                    out[str(i)] = {"rep_coord_nm": L2_COORDS[k]} if k is not None else {}
                return self._json(out)
            # materialization
            if path == "/materialize/api/versions":
                return self._json([2, 3])
            if path == "/materialize/version":
                return self._json("5.14.0")
            if path == f"{mat}/versions":
                return self._json(sorted(VERSIONS))
            if path == f"{mat}/metadata":
                return self._json([self._version_md(v) for v in sorted(VERSIONS)])
            if path.startswith(f"{mat}/version/"):
                parts = path[len(f"{mat}/version/") :].split("/")
                version = int(parts[0])
                if version not in VERSIONS:
                    return self._json({"message": "no such version"}, status=404)
                if len(parts) == 1:
                    return self._json(self._version_md(version))
                if len(parts) == 4 and parts[1] == "table" and parts[3] == "metadata":
                    if parts[2] not in TABLES:
                        return self._json({"message": "no such table"}, status=404)
                    return self._json(self._table_md(parts[2]))
                if len(parts) == 4 and parts[1] == "table" and parts[3] == "query":
                    if parts[2] not in TABLES:
                        return self._json({"message": "no such table"}, status=404)
                    cols, res = _query_table(parts[2], json.loads(body or b"{}"))
                    return self._send(200, _arrow(cols), "data.arrow", {"dataframe_resolution": res})
            # precomputed layers (EM, watershed, meshes)
            if path in ("/em/info", "/ws/info"):
                return self._json(server.em_info() if path.startswith("/em") else server.ws_info())
            if path.startswith(("/em/8_8_40/", "/ws/8_8_40/")):
                data = _chunk_bytes(path[1:3], path.rsplit("/", 1)[-1])
                if data is None:
                    return self._json({"message": "not found"}, status=404)
                return self._send(200, data, "application/octet-stream")
            if path.startswith("/ws/mesh/"):
                name = path.rsplit("/", 1)[-1]
                if name == "info":
                    return self._json({"@type": "neuroglancer_legacy_mesh"})
                if name.endswith(":0:frag"):
                    return self._send(200, _legacy_mesh(float(len(name) % 5)), "application/octet-stream")
            return self._json({"message": f"no route {path}"}, status=404)

        def _version_md(self, version: int) -> dict:
            return {
                "id": version,
                "version": version,
                "datastack": DATASTACK,
                "time_stamp": VERSIONS[version],
                "expires_on": "2099-01-01T00:00:00.000000",
                "valid": True,
                "status": "AVAILABLE",
            }

        def _table_md(self, table: str) -> dict:
            return {
                "table_name": table,
                "schema_type": "synapse" if table.startswith("synapses") else "proofreading_status",
                "reference_table": None,
                "voxel_resolution_x": float(RES[0]),
                "voxel_resolution_y": float(RES[1]),
                "voxel_resolution_z": float(RES[2]),
                "valid": True,
                "description": "replayed shape",
            }

    return Handler
