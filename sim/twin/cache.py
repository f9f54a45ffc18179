"""The twin's derived files, built once per world and Draco step into `<world>/twin-cache/draco-<step>nm/`
(deterministic, atomic).

What the twin serves but the world does not hold as such:
- mesh fragments: every root's mesh split by level-2 chunk and Draco-encoded (fragments.py), written
  both as v1 unsharded files with legacy names (`v1/{id}:0:{chunk bbox}`) and as v2 sharded initial
  meshes (`v2/initial/2/{chunk position}-{shard}.shard`, cloud-volume's own shard synthesis), with an
  index (`fragments.parquet`: root, level-2 id, chunk, sizes, quantization, shard byte range); for v1,
  stitched layer 3-4 fragments where a root's lineage was edited and each such root's manifest
  (`v1_manifest.parquet`, stitched.py);
- level-2 graphs (`l2graph.parquet`): each proofread root's level-2 graph, one level-2 id per
  connected component of the neuron in a chunk, edges where components touch (cycles included), each
  component's representative voxel as the l2cache's rep_coord_nm (pipeline/sources/demo_level2.py);
- supervoxels under points (`points.parquet`): the supervoxel under each edit's source and sink point
  (an edit's edge) and under each proofread neuron's point (the table's pt_supervoxel_id).

The cache is built in a temp dir beside it and renamed into place; `cache.json` (written last, inside
that dir) names the world (sha256 of world.json) and the settings it was built with, so a cache of
another world or other settings is rebuilt, never served.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cloudvolume import CloudVolume
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification, ShardReader

from core.atomic import write_json, write_parquet
from core.hashing import sha256_file
from pipeline.sources.demo_level2 import level2_graph
from pipeline.sources.demo_tables import anchor_voxel
from pipeline.sources.demo_volume import CHUNK, RES, VOXEL_OFFSET
from sim.twin import ids
from sim.twin.fragments import encode_fragment, overhang_nm, pcg_draco_bin_nm, quantization_for, split_by_chunk
from sim.twin.stitched import edit_chunks, highest_meshed

CACHE_FORMAT = "cb2-twin-cache/2"  # 2: level-2 graphs of chunk components, v1 stitched fragments
CACHE_DIR = "twin-cache"
# The sharding of level-2 initial meshes (MICrONS-like; the spec's fields are the precomputed standard's).
SHARD_SPEC = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "murmurhash3_x86_128",
    "minishard_bits": 1,
    "shard_bits": 1,
    "minishard_index_encoding": "gzip",
    "data_encoding": "raw",
}


def cache_dir(world_dir: Path, draco_bin_nm: float | None = None) -> Path:
    """The cache of this world for these settings: a folder per Draco step, so that a twin started with other
    settings on the same world (a build's twin beside a test's) never replaces the files another one serves."""
    bin_nm = default_draco_bin_nm() if draco_bin_nm is None else float(draco_bin_nm)
    return Path(world_dir) / CACHE_DIR / f"draco-{bin_nm:g}nm"


def _key(world_dir: Path, draco_bin_nm: float) -> dict:
    return {
        "format": CACHE_FORMAT,
        "world_sha256": sha256_file(Path(world_dir) / "world.json"),
        "draco_bin_nm": float(draco_bin_nm),
        "shard_spec": SHARD_SPEC,
    }


def default_draco_bin_nm() -> float:
    return pcg_draco_bin_nm(RES, CHUNK)


def ensure_cache(world_dir: str | os.PathLike, draco_bin_nm: float | None = None) -> Path:
    """The cache for this world and settings, built if missing or stale. Safe to call concurrently:
    each builder writes its own temp dir; the first rename wins and the others discard theirs."""
    world_dir = Path(world_dir).resolve()
    bin_nm = default_draco_bin_nm() if draco_bin_nm is None else float(draco_bin_nm)
    target = cache_dir(world_dir, bin_nm)
    key = _key(world_dir, bin_nm)
    if _matches(target, key):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        summary = build(world_dir, tmp, bin_nm)
        write_json(tmp / "cache.json", {**key, "summary": summary})
        if target.exists():
            stale = target.parent / f".{target.name}.stale-{os.getpid()}"
            with contextlib.suppress(OSError):
                os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another builder got there first
            if not _matches(target, key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _matches(target: Path, key: dict) -> bool:
    try:
        got = json.loads((target / "cache.json").read_text())
    except (OSError, ValueError):
        return False
    return all(got.get(k) == v for k, v in key.items())


def cache_summary(target: Path) -> dict:
    return json.loads((Path(target) / "cache.json").read_text())["summary"]


def build(world_dir: Path, out: Path, bin_nm: float) -> dict:
    """Write every derived file of the twin for `world_dir` into `out`; returns a summary."""
    roots = pq.read_table(world_dir / "tables" / "roots.parquet", columns=["root_id"])["root_id"].to_pylist()
    seg = CloudVolume(f"file://{world_dir}/segmentation", progress=False, fill_missing=True)
    next_segid: dict[tuple[int, int, int], int] = defaultdict(int)
    rows: dict[str, list] = defaultdict(list)
    shard_data: dict[int, dict[int, bytes]] = defaultdict(dict)  # chunk position number -> {l2 id: bytes}
    max_overhang = 0.0
    exists = seg.mesh.exists([int(r) for r in roots])
    edited = _edited_chunks(world_dir)
    v1_rows: list[dict] = []
    higher_segid: dict[tuple[int, int, int, int], int] = defaultdict(int)
    for root in sorted(int(r) for r in roots):
        if exists.get(str(root)) is None:
            continue
        mesh = seg.mesh.get(root, fuse=False)[root]
        frags = split_by_chunk(mesh.vertices, mesh.faces)
        first = len(rows["l2_id"])
        for frag in frags:
            next_segid[frag.chunk] += 1
            l2 = ids.encode(2, *frag.chunk, next_segid[frag.chunk])
            q = quantization_for(frag.vertices, bin_nm)
            data = encode_fragment(frag.vertices, frag.faces, q)
            name = ids.legacy_fragment_name(l2)
            _put(out / "v1" / name, data)
            shard_data[ids.chunk_position_number(l2)][l2] = data
            max_overhang = max(max_overhang, overhang_nm(frag, RES))
            for col, val in (
                ("root_id", root), ("l2_id", l2), ("chunk", list(frag.chunk)), ("n_vertices", len(frag.vertices)),
                ("n_faces", len(frag.faces)), ("nbytes", len(data)), ("q_bits", q.bits), ("q_range_nm", q.range_nm),
                ("q_origin_nm", list(q.origin_nm)), ("v1_name", name),
            ):  # fmt: skip
                rows[col].append(val)
        if edited.get(root):
            v1_rows.append(_stitch(out, root, frags, rows, first, edited[root], higher_segid, bin_nm))
    ranges = _write_shards(out / "v2" / "initial" / "2", shard_data)
    rows["v2_fragment"] = [ranges[l2] for l2 in rows["l2_id"]]
    write_parquet(out / "fragments.parquet", _fragments_table(rows))
    n_l2 = _write_l2graph(world_dir, out, next_segid)
    n_points = _write_points(world_dir, out, seg)
    write_parquet(out / "v1_manifest.parquet", pa.Table.from_pylist(v1_rows, schema=V1_MANIFEST_SCHEMA))
    layers = [layer for r in v1_rows for layer in r["layers"]]
    return {
        "v1_stitched_roots": len(v1_rows),
        "v1_stitched_fragments": {str(k): layers.count(k) for k in (3, 4)},
        "fragments": len(rows["l2_id"]),
        "roots_with_mesh": len(set(rows["root_id"])),
        "fragment_bytes": int(sum(rows["nbytes"])),
        "max_overhang_nm": max_overhang,
        "draco_bin_nm": bin_nm,
        "l2graph_nodes": n_l2,
        "points": n_points,
    }


V1_MANIFEST_SCHEMA = pa.schema(
    [
        ("root_id", pa.uint64()),
        ("fragments", pa.list_(pa.string())),  # legacy names, in the order a v1 manifest lists them
        ("layers", pa.list_(pa.int64())),
        ("nbytes", pa.list_(pa.int64())),
    ]
)


def _edited_chunks(world_dir: Path) -> dict[int, set]:
    """Level-2 chunks touched by the edits of each root's lineage (its creating edits and its ancestors'),
    from the edits' source and sink points; an edit without points places nothing."""
    ops = pq.read_table(world_dir / "tables" / "operations.parquet").to_pylist()
    made_by: dict[int, list[dict]] = defaultdict(list)
    for op in ops:
        for r in op["after_root_ids"]:
            made_by[int(r)].append(op)
    memo: dict[int, set] = {}

    def of(root: int) -> set:
        stack, order = [root], []
        while stack:  # iterative post-order: lineages are deep
            r = stack.pop()
            if r in memo or r in order:
                continue
            order.append(r)
            stack.extend(int(b) for op in made_by.get(r, []) for b in op["before_root_ids"])
        for r in reversed(order):
            got = set()
            for op in made_by.get(r, []):
                pts = [*(op["source_coords_vx"] or []), *(op["sink_coords_vx"] or [])]
                got |= edit_chunks(pts, VOXEL_OFFSET, ids.GRAPH_CHUNK_VX)
                for b in op["before_root_ids"]:
                    got |= memo.get(int(b), set())
            memo[r] = got
        return memo[root]

    return {r: of(r) for r in sorted(made_by)}


def _stitch(
    out: Path, root: int, frags: list, rows: dict, first: int, edited: set, segids: dict, bin_nm: float
) -> dict:
    """The root's v1 manifest: stitched layer 3-4 fragments where its lineage was edited (written to v1/),
    its level-2 fragments elsewhere (stitched.py)."""
    stitched, plain = highest_meshed([f.chunk for f in frags], edited)
    names, layers, sizes = [], [], []
    for node in stitched:
        key = (node.layer, *node.chunk)
        segids[key] += 1
        node_id = ids.encode(node.layer, *node.chunk, segids[key])
        parts = [frags[i] for i in node.members]
        verts, inverse = np.unique(np.concatenate([p.vertices for p in parts]), axis=0, return_inverse=True)
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        faces = inverse.ravel()[
            np.concatenate([p.faces.astype(np.int64) + o for p, o in zip(parts, offsets, strict=True)])
        ]
        data = encode_fragment(verts, faces, quantization_for(verts, bin_nm))
        name = ids.legacy_fragment_name(node_id)
        _put(out / "v1" / name, data)
        names.append(name)
        layers.append(node.layer)
        sizes.append(len(data))
    for i in plain:
        names.append(rows["v1_name"][first + i])
        layers.append(2)
        sizes.append(rows["nbytes"][first + i])
    return {"root_id": root, "fragments": names, "layers": layers, "nbytes": sizes}


def _put(path: Path, data: bytes) -> None:
    """A plain write: these files live in the builder's own temp dir, renamed into place whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fragments_table(rows: dict[str, list]) -> pa.Table:
    schema = pa.schema(
        [
            ("root_id", pa.uint64()),
            ("l2_id", pa.uint64()),
            ("chunk", pa.list_(pa.int64(), 3)),
            ("n_vertices", pa.int64()),
            ("n_faces", pa.int64()),
            ("nbytes", pa.int64()),
            ("q_bits", pa.int64()),
            ("q_range_nm", pa.float64()),
            ("q_origin_nm", pa.list_(pa.float64(), 3)),
            ("v1_name", pa.string()),
            ("v2_fragment", pa.string()),
        ]
    )
    return pa.Table.from_pydict({f.name: rows[f.name] for f in schema}, schema=schema)


def _write_shards(folder: Path, shard_data: dict[int, dict[int, bytes]]) -> dict[int, str]:
    """Shard files per chunk (cloud-volume's synthesis), and each fragment's `~2/{file}:{offset}:{size}`."""
    spec = ShardingSpecification.from_dict(SHARD_SPEC)
    reader = ShardReader(None, None, spec)
    ranges: dict[int, str] = {}
    for position in sorted(shard_data):
        for fname, binary in sorted(spec.synthesize_shards(shard_data[position]).items()):
            name = f"{position}-{fname}"
            _put(folder / name, binary)
            index = reader.decode_index(binary[: spec.index_length()], name)
            for start, end in index:
                if start == end:
                    continue
                for label, offset, size in reader.decode_minishard_index(binary[int(start) : int(end)], name):
                    ranges[int(label)] = f"~2/{name}:{int(offset)}:{int(size)}"
    return ranges


def _write_l2graph(world_dir: Path, out: Path, next_segid: dict) -> int:
    """Each proofread root's level-2 graph: one node per chunk component (pipeline.sources.demo_level2, cycles
    included), its representative voxel as the l2cache's rep_coord_nm; ids after the mesh fragments' in
    each chunk."""
    skel = pq.read_table(world_dir / "tables" / "skeletons.parquet").to_pylist()
    out_rows = []
    for row in sorted(skel, key=lambda r: r["root_id"]):
        graph = level2_graph(np.asarray(row["vertices_nm"], dtype=np.float64).reshape(-1, 3), row["edges"])
        l2_ids = []
        for chunk in graph.chunks:
            key = tuple(int(c) for c in chunk)
            next_segid[key] += 1
            l2_ids.append(ids.encode(2, *key, next_segid[key]))
        edges = [[l2_ids[a], l2_ids[b]] for a, b in graph.edges.tolist()]
        out_rows.append(
            {"root_id": row["root_id"], "l2_ids": l2_ids, "rep_coord_nm": graph.rep_coord_nm.tolist(), "edges": edges}
        )
    schema = pa.schema(
        [
            ("root_id", pa.uint64()),
            ("l2_ids", pa.list_(pa.uint64())),
            ("rep_coord_nm", pa.list_(pa.list_(pa.float64(), 3))),
            ("edges", pa.list_(pa.list_(pa.uint64(), 2))),
        ]
    )
    write_parquet(out / "l2graph.parquet", pa.Table.from_pylist(out_rows, schema=schema))
    return sum(len(r["l2_ids"]) for r in out_rows)


def _write_points(world_dir: Path, out: Path, seg: CloudVolume) -> int:
    """The supervoxel under every edit point and every proofread neuron's point."""
    ops = pq.read_table(world_dir / "tables" / "operations.parquet").to_pylist()
    neurons = pq.read_table(world_dir / "tables" / "proofread_neurons.parquet").to_pylist()
    wanted: list[tuple[str, int, int, tuple[int, int, int]]] = []
    for op in ops:
        for kind in ("source", "sink"):
            for i, p in enumerate(op[f"{kind}_coords_vx"] or []):
                wanted.append((kind, int(op["operation_id"]), i, tuple(int(c) for c in p)))
    for row in neurons:
        wanted.append(("anchor", int(row["id"]), 0, anchor_voxel(row["pt_position_nm"])))
    unique = sorted({w for w in wanted})
    svs = []
    for _kind, _key, _i, (x, y, z) in unique:
        svs.append(int(np.asarray(seg[x : x + 1, y : y + 1, z : z + 1]).ravel()[0]))
    table = pa.table(
        {
            "kind": pa.array([w[0] for w in unique], pa.string()),
            "key": pa.array([w[1] for w in unique], pa.int64()),
            "index": pa.array([w[2] for w in unique], pa.int64()),
            "voxel": pa.array([list(w[3]) for w in unique], pa.list_(pa.int64(), 3)),
            "supervoxel_id": pa.array(svs, pa.uint64()),
        }
    )
    write_parquet(out / "points.parquet", table)
    return len(unique)
