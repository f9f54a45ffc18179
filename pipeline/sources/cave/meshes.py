"""Bounded mesh fetches from a graphene segmentation, through cloud-volume's own graphene mesh code.

A sample needs its neurons' meshes only within its fetch box, so the fetch asks for that box:
`bounding_box` in mip-0 voxels, which cloud-volume turns into the manifest query's `bounds` plus
`{"start_layer": 2}` (datasource/graphene/mesh/unsharded.py fetch_manifest_remote). A v2 server keeps
only the level-2 fragments whose chunks the box touches; a v1 server ignores `bounds`, so the manifest's
legacy names `{id}:0:{chunk bbox}` are filtered here, on the client, before anything is downloaded.

The manifest request is made here (with this source's timeouts and retries; cloud-volume's own has no
timeout), then handed to cloud-volume through its `fetch_manifest_remote` hook (per thread), and
cloud-volume downloads (byte ranges of shard files on v2), Draco-decodes and stitches the fragments.

Only a real absence is `missing_mesh`: a 404 for the manifest or a manifest with no fragment at all.
A box the mesh does not reach gives an empty mesh (the fetch stage names that `mesh_outside_window`);
every other failure (a decoding error, a fragment the manifest lists but the bucket lacks) is raised.
"""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import requests
import trimesh

from core.errors import SampleError, UserError
from pipeline.sources.cave.session import CaveSession, Service
from pipeline.sources.cave.values import https_url
from pipeline.sources.cave.volumes import Volumes

_LEGACY = re.compile(r"^(\d+):\d+:(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)$")


def empty_mesh() -> trimesh.Trimesh:
    return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)


def box_to_voxels(box_nm, resolution, pad_nm: float, bounds_lo, bounds_hi):  # noqa: ANN001, ANN201
    """The nm box (lo, hi), padded, as a cloud-volume Bbox in mip-0 voxels clamped to the volume; None if
    the box misses the volume (a negative voxel bound would not even parse as `bounds`)."""
    from cloudvolume.lib import Bbox

    lo_nm, hi_nm = (np.asarray(b, dtype=np.float64).reshape(3) for b in box_nm)
    res = np.asarray(resolution, dtype=np.float64)
    lo = np.maximum(np.floor((lo_nm - pad_nm) / res).astype(np.int64), np.asarray(bounds_lo, dtype=np.int64))
    hi = np.minimum(np.ceil((hi_nm + pad_nm) / res).astype(np.int64), np.asarray(bounds_hi, dtype=np.int64))
    if (hi <= lo).any():
        return None
    return Bbox(lo, hi)


def filter_manifest(manifest: dict, bbox, grid_origin_vx: np.ndarray) -> dict:  # noqa: ANN001
    """Keep the fragments a legacy name places in chunks touching `bbox` (names carry the chunk's box in
    voxels from the chunk grid's origin); sharded (`~`) and unnamed entries are kept (the server chose
    them). `seg_ids`, when present, stay aligned with `fragments`."""
    lo = np.asarray(bbox.minpt, dtype=np.int64)
    hi = np.asarray(bbox.maxpt, dtype=np.int64)
    keep = []
    for name in manifest.get("fragments", []):
        m = _LEGACY.match(name)
        if m is None:
            keep.append(True)
            continue
        v = np.array([int(x) for x in m.groups()[1:]], dtype=np.int64).reshape(3, 2)
        f_lo, f_hi = v[:, 0] + grid_origin_vx, v[:, 1] + grid_origin_vx
        keep.append(bool((f_lo < hi).all() and (f_hi > lo).all()))
    out = dict(manifest)
    out["fragments"] = [f for f, k in zip(manifest.get("fragments", []), keep, strict=True) if k]
    if "seg_ids" in manifest and len(manifest["seg_ids"]) == len(keep):
        out["seg_ids"] = [s for s, k in zip(manifest["seg_ids"], keep, strict=True) if k]
    return out


class PreparedManifests:
    """cloud-volume's `fetch_manifest_remote`, answering from the manifest this thread fetched last."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {}  # a thread's prepared manifest is its own: a worker starts with none

    def __setstate__(self, state: dict) -> None:
        self._local = threading.local()

    def prepare(self, manifest: dict) -> None:
        self._local.manifest = manifest

    def clear(self) -> None:
        self._local.manifest = None

    def __call__(self, segid, lod=0, level=2, bbox=None, return_segids=False, verify=True) -> dict:  # noqa: ANN001
        manifest = getattr(self._local, "manifest", None)
        if manifest is None:
            raise RuntimeError(f"no prepared manifest for {segid}: meshes are fetched through CaveSource.mesh")
        return manifest


def fetch_manifest(
    session: requests.Session,
    seg,
    root: int,
    bbox,
    timeout: tuple[float, float],  # noqa: ANN001
) -> dict | None:
    """The manifest request cloud-volume would send (same URL, query and body); None for a 404."""
    meta = seg.meta
    level = 2 if bbox is not None else min(int(meta.decode_layer_id(root)), int(meta.max_meshed_layer))
    params = {"verify": True, "return_seg_ids": 1}
    if bbox is not None:
        params["bounds"] = bbox.to_filename()
    url = f"{meta.manifest_endpoint}/{int(root)}:0"
    resp = session.get(
        url, data=json.dumps({"start_layer": level}), params=params, headers=meta.auth_header, timeout=timeout
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()


def decode(seg, root: int, bbox, manifests: PreparedManifests, manifest: dict) -> trimesh.Trimesh:  # noqa: ANN001
    """cloud-volume's download + Draco decode + stitch of the fragments `manifest` lists."""
    manifests.prepare(manifest)
    try:
        got = seg.mesh.get(root, bounding_box=bbox, deduplicate_chunk_boundaries=False)
    finally:
        manifests.clear()
    mesh = got.get(root) if isinstance(got, dict) else got
    if mesh is None:
        raise SampleError("missing_mesh", f"root {root}: cloud-volume returned no mesh")
    return trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float64),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        process=False,
    )


class Meshes(Service):
    """A root's mesh, bounded to a box, from the graphene segmentation's meshing service (see the module)."""

    def __init__(self, session: CaveSession, volumes: Volumes) -> None:
        super().__init__(session)
        self.volumes = volumes

    def mesh(self, root_id: int, box_nm=None) -> trimesh.Trimesh:  # noqa: ANN001
        """The root's mesh in nm; with box_nm = (lo_nm, hi_nm), only the fragments the box (padded by
        limits.mesh_pad_nm) touches. Empty if the mesh does not reach the box; missing_mesh if there is none."""
        root = int(root_id)
        s = self.session
        if not self.cfg.seg_cloudpath.startswith("graphene://"):
            raise UserError(f"{s.config_file}: seg_cloudpath must be a graphene:// segmentation for meshes")
        seg = self.volumes.seg()
        url = https_url(self.cfg.seg_cloudpath)
        bbox = None
        if box_nm is not None:
            bounds = seg.meta.bounds(0)
            bbox = box_to_voxels(box_nm, seg.meta.resolution(0), self.limits.mesh_pad_nm, bounds.minpt, bounds.maxpt)
            if bbox is None:
                return empty_mesh()

        def manifest_of(box):  # noqa: ANN001, ANN202 - through the adaptive layer (timeouts, resends, 429)
            fetch = lambda: fetch_manifest(s.http(), seg, root, box, s.timeout)  # noqa: E731
            return s.one("manifest", f"mesh manifest of {root}", url, fetch)

        with s.guard(f"mesh manifest of {root}", url):
            manifest = manifest_of(bbox)
            if manifest is not None and not manifest.get("fragments") and bbox is not None:
                # nothing in the box: a mesh elsewhere, or none at all?
                whole = manifest_of(None)
                if whole is not None and whole.get("fragments"):
                    return empty_mesh()
        if manifest is None or not manifest.get("fragments"):
            raise SampleError("missing_mesh", f"root {root}: the meshing service lists no fragment")
        if bbox is not None:
            origin = np.asarray(seg.meta.voxel_offset(0) if seg.meta.chunks_start_at_voxel_offset else (0, 0, 0))
            manifest = filter_manifest(manifest, bbox, origin.astype(np.int64))
            if not manifest["fragments"]:
                return empty_mesh()
        with s.guard(f"mesh fragments of {root}", url):
            return decode(seg, root, bbox, self.volumes.manifests, manifest)
