"""The volumes (cloud-volume): EM and segmentation cutouts, the segmentation's bounding box, resolution and chunk
grid.

The graphene segmentation's info is read here (with this source's timeout and the CAVE client's token, see
CaveSession.client_token) and handed to CloudVolume; a mip the layer's info does not list is a UserError naming
those it does. Cutouts read absent chunks as missing, not black (base.read_padded); segmentation cutouts are
supervoxels resolved to roots at the row's time through the chunkedgraph client, whose requests are bounded.
cloud-files' own reads (chunks, shards, mesh fragments) get a timeout and the build's budget of their host
(`install_cloudfiles_timeouts`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from core.errors import UserError
from pipeline.sources.base import Cutout, cutout_box, read_padded
from pipeline.sources.budget import BudgetedAdapter
from pipeline.sources.cave.chunkedgraph import Chunkedgraph
from pipeline.sources.cave.session import CaveSession, Service
from pipeline.sources.cave.values import https_url

_INSTALLED: dict[str, Any] = {}
# how every layer is opened: over https, an absent chunk an error (base.read_padded marks it missing), no cache
LAYER = {"use_https": True, "fill_missing": False, "progress": False, "bounded": False, "cache": False}


class TimeoutAdapter(BudgetedAdapter):
    """An HTTPAdapter that gives every request it sends a default (connect, read) timeout, through the build's budget
    of its host (budget.py: in flight, pace, outages)."""

    def __init__(self, timeout: tuple[float, float], **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # noqa: ANN001, ANN201 - requests' signature
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def install_cloudfiles_timeouts(timeout: tuple[float, float]) -> None:
    """Give cloud-files' HTTP reads a timeout (they have none): its HttpInterface mounts one shared
    class-level adaptor on every session, so replacing that adaptor bounds every chunk, shard and
    fragment read of this process. Idempotent; the longest timeout asked for wins."""
    from cloudfiles.interfaces import HttpInterface

    current = _INSTALLED.get("timeout")
    if current is not None and current[1] >= timeout[1]:
        return
    HttpInterface.adaptor = TimeoutAdapter(timeout, pool_maxsize=32)  # cloud-files reads with many threads
    _INSTALLED["timeout"] = timeout


class Volumes(Service):
    """The EM and segmentation layers. `manifests`: what the segmentation's mesh source answers its manifest
    requests with (meshes.py PreparedManifests: the manifest the mesh fetch asked for itself)."""

    def __init__(self, session: CaveSession, chunkedgraph: Chunkedgraph, manifests: Any) -> None:
        super().__init__(session)
        self.chunkedgraph = chunkedgraph
        self.manifests = manifests

    def _reach(self, key: str) -> str:
        """The https URL of the layer config key `key` names, its host reached and budgeted (before a CloudVolume
        with long retries is opened on it), and cloud-files' reads bounded."""
        install_cloudfiles_timeouts(self.session.timeout)
        url = https_url(getattr(self.cfg, key))
        self.session.probe(url, key)
        self.session.budget_host(url)
        return url

    def em(self):  # noqa: ANN201 - a CloudVolume
        s = self.session
        if s.em_cv is None:
            from cloudvolume import CloudVolume

            url = self._reach("em_cloudpath")
            with s.guard("EM volume", url):
                try:
                    s.em_cv = CloudVolume(self.cfg.em_cloudpath, mip=self.cfg.em_mip, **LAYER)
                except IndexError:  # cloud-volume's ScaleUnavailableError is one; an empty scale list raises it too
                    raise self.missing_mip("em_mip", self.cfg.em_mip, url) from None
            s.reached = True
        return s.em_cv

    def missing_mip(self, key: str, mip: int, url: str, info: dict | None = None) -> UserError:
        """`key` names a mip the layer's info does not list: UserError naming the mips (and resolutions) it does."""
        s = self.session
        if info is None:
            with s.guard(f"{key} layer info", url):
                resp = s.http().get(url.rstrip("/") + "/info", timeout=s.timeout)
                resp.raise_for_status()
                info = resp.json()
        scales = [f"{i} ({'x'.join(f'{r:g}' for r in sc.get('resolution', []))} nm)"
                  for i, sc in enumerate(info.get("scales") or [])]  # fmt: skip
        return UserError(
            f"{s.config_file}: {key} {mip} is not a mip of {url} (its info lists "
            f"{', '.join(scales) if scales else 'no scales'}); set {key} to one it lists"
        )

    def seg(self):  # noqa: ANN201 - a CloudVolume
        """The graphene segmentation; its info is read here (with a timeout) and handed to CloudVolume."""
        s = self.session
        if s.seg_cv is None:
            from cloudvolume import CloudVolume
            from cloudvolume.datasource.graphene.metadata import extract_graphene_path

            url = self._reach("seg_cloudpath")
            info, token = None, s.token()
            if self.cfg.seg_cloudpath.startswith("graphene://"):
                gp = extract_graphene_path(url)
                info_url = f"{gp.scheme}://{gp.fqdn}/{gp.modality}/table/{gp.dataset}/info"
                s.client()  # the CAVE client's token (see CaveSession.client_token), for the segmentation's requests
                token = s.client_token()
                with s.guard("segmentation info", info_url):
                    resp = s.http().get(
                        info_url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=s.timeout
                    )
                    resp.raise_for_status()
                    info = resp.json()
            if info is not None and self.cfg.seg_mip >= len(info.get("scales") or []):
                raise self.missing_mip("seg_mip", self.cfg.seg_mip, url, info)
            with s.guard("segmentation volume", url):
                seg = CloudVolume(
                    self.cfg.seg_cloudpath, mip=self.cfg.seg_mip, agglomerate=False, secrets=token, info=info, **LAYER
                )
            if info is not None:
                seg.mesh.fetch_manifest_remote = self.manifests  # answers with the manifest fetched here
            s.reached = True
            s.seg_cv = seg
        return s.seg_cv

    # ------------------------------------------------------------------ geometry of the volume
    def base_resolution_nm(self) -> tuple[float, float, float]:
        seg = self.seg()
        return tuple(float(v) for v in seg.meta.resolution(0))

    def canonical_bbox_nm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        seg = self.seg()
        bounds = seg.meta.bounds(0)
        res = np.asarray(seg.meta.resolution(0), dtype=np.float64)
        lo = np.asarray(bounds.minpt, dtype=np.float64) * res
        hi = np.asarray(bounds.maxpt, dtype=np.float64) * res
        return tuple(float(v) for v in lo), tuple(float(v) for v in hi)

    def chunk_centres(self, l2_ids: np.ndarray) -> dict[int, list[float]]:
        """Each level-2 id's chunk centre in nm (the chunk its id encodes, on the segmentation's graph chunk grid)."""
        meta = self.seg().meta
        res = np.asarray(meta.resolution(0), dtype=np.float64)
        size = np.asarray(meta.graph_chunk_size, dtype=np.float64)
        offset = np.asarray(meta.voxel_offset(0), dtype=np.float64) if meta.chunks_start_at_voxel_offset else 0.0
        out = {}
        for l2 in l2_ids:
            pos = np.asarray(meta.decode_chunk_position(int(l2)), dtype=np.float64)
            out[int(l2)] = ((offset + (pos + 0.5) * size) * res).tolist()
        return out

    # ------------------------------------------------------------------ cutouts
    def cutout(self, cv, mip: int, center_nm: np.ndarray, size_nm: float, what: str, url: str) -> Cutout:  # noqa: ANN001
        """The cube `size_nm` wide at `center_nm` of layer `cv` at `mip`, absent chunks marked (base.read_padded)."""
        from cloudvolume.lib import Bbox

        res = np.asarray(cv.meta.resolution(mip), dtype=np.float64)
        lo, hi = cutout_box(np.asarray(center_nm, dtype=np.float64).reshape(3), size_nm, res)

        def read(blo: np.ndarray, bhi: np.ndarray) -> np.ndarray:
            with self.session.guard(what, url):
                return cv.download(Bbox(blo, bhi), mip=mip)

        bounds = cv.meta.bounds(mip)
        data, missing = read_padded(
            read, lo, hi, bounds.minpt, bounds.maxpt, cv.meta.dtype, cv.meta.chunk_size(mip), cv.meta.voxel_offset(mip)
        )
        origin = tuple(float(v) for v in lo * res)
        return Cutout(data=data, voxel_nm=tuple(float(v) for v in res), origin_nm=origin, missing=missing)

    def em_cutout(self, center_nm: np.ndarray, size_nm: float) -> Cutout:
        cv = self.em()
        cut = self.cutout(cv, self.cfg.em_mip, center_nm, size_nm, "EM cutout", https_url(self.cfg.em_cloudpath))
        return dataclasses.replace(cut, data=cut.data.astype(np.uint8, copy=False))

    def segmentation_cutout(self, center_nm: np.ndarray, size_nm: float, timestamp: float) -> Cutout:
        """Supervoxels from the graphene layer's watershed, resolved to roots at `timestamp`.

        Equivalent to CloudVolume's agglomerate=True (which posts the same supervoxels to roots_binary), but
        the lookup goes through the chunkedgraph client whose timeouts and retries are bounded here.
        """
        cv = self.seg()
        cut = self.cutout(
            cv, self.cfg.seg_mip, center_nm, size_nm, "segmentation cutout", https_url(self.cfg.seg_cloudpath)
        )
        roots = self.chunkedgraph.roots_at(cut.data.astype(np.uint64, copy=False), timestamp)
        return dataclasses.replace(cut, data=roots)
