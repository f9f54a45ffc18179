"""The twin's derived files: deterministic, atomic, rebuilt only for another world or setting, and
faithful to the world's meshes (every face in one fragment, Draco on one grid, v1 files = v2 ranges)."""

from __future__ import annotations

import hashlib
import json

import DracoPy
import numpy as np
import pyarrow.parquet as pq
import pytest
from cloudvolume import CloudVolume

from pipeline.sources.demo_volume import CHUNK, RES, VOXEL_OFFSET
from sim.twin import ids
from sim.twin.cache import build, cache_dir, ensure_cache
from sim.twin.fragments import pcg_draco_bin_nm, quantization_for, split_by_chunk


def _hashes(root) -> dict[str, str]:
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_build_is_deterministic(twin_world, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    sa, sb = build(twin_world, a, 17.0), build(twin_world, b, 17.0)
    assert sa == sb and _hashes(a) == _hashes(b)
    assert sa["fragments"] > sa["roots_with_mesh"] > 10


def test_ensure_cache_is_reused_then_rebuilt_for_other_settings(twin_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(twin_world, world, ignore=shutil.ignore_patterns("twin-cache"))
    first = ensure_cache(world)
    stamp = (first / "cache.json").stat().st_mtime_ns
    assert ensure_cache(world) == first and (first / "cache.json").stat().st_mtime_ns == stamp
    other = ensure_cache(world, draco_bin_nm=8.0)
    assert other == cache_dir(world, 8.0) != first
    assert json.loads((other / "cache.json").read_text())["draco_bin_nm"] == 8.0
    # other settings beside, not instead: a twin serving the first cache keeps its files
    assert (first / "cache.json").stat().st_mtime_ns == stamp
    assert not [p for p in (world / "twin-cache").iterdir() if p.name.startswith(".")]  # no partial or stale dirs
    (world / "world.json").write_text((world / "world.json").read_text() + " ")  # another world
    ensure_cache(world, draco_bin_nm=8.0)
    got = json.loads((cache_dir(world, 8.0) / "cache.json").read_text())
    assert got["world_sha256"] == hashlib.sha256((world / "world.json").read_bytes()).hexdigest()


def test_fragments_hold_every_face_once_on_one_grid(twin, twin_world):
    cache = cache_dir(twin_world)
    frags = pq.read_table(cache / "fragments.parquet").to_pylist()
    bin_nm = json.loads((cache / "cache.json").read_text())["draco_bin_nm"]
    seg = CloudVolume(f"file://{twin_world}/segmentation", progress=False)
    by_root: dict[int, list[dict]] = {}
    for f in frags:
        by_root.setdefault(f["root_id"], []).append(f)
    root = max(by_root, key=lambda r: len(by_root[r]))  # the long neuron
    mesh = seg.mesh.get(root, fuse=False)[root]
    assert sum(f["n_faces"] for f in by_root[root]) == len(mesh.faces)
    assert len({tuple(f["chunk"]) for f in by_root[root]}) == len(by_root[root])  # one fragment per chunk
    for f in by_root[root][:20]:
        data = (cache / "v1" / f["v1_name"]).read_bytes()
        layer_file, offset, size = f["v2_fragment"][1:].rsplit(":", 2)
        shard = (cache / "v2" / "initial" / layer_file).read_bytes()
        assert shard[int(offset) : int(offset) + int(size)] == data  # the same bytes, both flavours
        pts = np.asarray(DracoPy.decode(data).points, dtype=np.float64)
        k = (pts - np.asarray(f["q_origin_nm"])) / bin_nm
        assert np.abs(k - np.round(k)).max() < 1e-3  # on the shared quantization grid
        assert ids.layer_of(f["l2_id"]) == 2 and list(ids.chunk_of(f["l2_id"])) == f["chunk"]
        assert f["v1_name"] == ids.legacy_fragment_name(f["l2_id"])


def test_ids_decode_as_cloud_volume_decodes_them(twin):
    from cloudvolume import CloudVolume as CV

    from sim.twin.info import TABLE_ID

    seg = CV(f"graphene://{twin.url}/segmentation/table/{TABLE_ID}", secrets=twin.token, progress=False)
    l2 = ids.encode(2, 101, 7, 63, 12345)
    assert int(seg.meta.decode_layer_id(l2)) == 2
    assert tuple(int(c) for c in seg.meta.decode_chunk_position(l2)) == (101, 7, 63)
    assert int(seg.meta.decode_chunk_position_number(l2)) == ids.chunk_position_number(l2)
    assert int(seg.meta.decode_segid(l2)) == 12345
    root = twin.world.summary["long_neurons"][0]["root_id"]
    assert int(seg.meta.decode_layer_id(root)) == ids.N_LAYERS
    with pytest.raises(ValueError):
        ids.encode(2, 2**10, 0, 0, 1)


def test_split_and_quantization_rules():
    chunk_nm = CHUNK * RES
    origin = VOXEL_OFFSET * RES
    # two triangles: centroids in chunk (0, 0, 0) and (1, 0, 0); the second reaches back into the first
    v = np.array([[10, 10, 10], [20, 10, 10], [10, 20, 10], [chunk_nm[0] - 5, 10, 10], [chunk_nm[0] + 90, 10, 10],
                  [chunk_nm[0] + 50, 30, 10]], dtype=np.float64) + origin  # fmt: skip
    f = np.array([[0, 1, 2], [3, 4, 5]])
    frags = split_by_chunk(v, f)
    assert [fr.chunk for fr in frags] == [(0, 0, 0), (1, 0, 0)]
    assert all(len(fr.faces) == 1 and len(fr.vertices) == 3 for fr in frags)
    q = quantization_for(frags[1].vertices, 17.0)
    assert q.range_nm == 17.0 * (2**q.bits - 1) and all(o % 17.0 == 0 for o in q.origin_nm)
    assert (np.asarray(q.origin_nm) <= frags[1].vertices.min(axis=0)).all()
    assert (np.asarray(q.origin_nm) + q.range_nm >= frags[1].vertices.max(axis=0)).all()
    # PyChunkedGraph's bin: floor(32/sqrt 2) = 22 caps it; 7 bits of bins over a 2,080 nm chunk give 17
    assert pcg_draco_bin_nm(RES, CHUNK) == 17.0
    assert pcg_draco_bin_nm(np.array([8.0, 8.0, 40.0]), np.array([256, 256, 512])) <= np.floor(8 / np.sqrt(2))
