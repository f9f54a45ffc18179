"""Nearest-hit ray casting through Embree 4's C API (ctypes), using the library that ships inside embreex.

Why not embreex's Python API: its TriangleMesh copies vertices and indices element by element through Python
indexing (~30 ms for 50k faces) and its `run` casts one ray at a time; it also makes a new device (a new
thread pool) per scene. Here the device is made once per process with `threads=1` (we run one worker process
per core, so Embree's own threads would only compete with the other workers), the mesh buffers are shared
with numpy (no copy), and rays go in 16-wide packets (rtcIntersect16).

`available()` is False when the library or a symbol cannot be found; callers then fall back to embreex.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

_RTC_GEOMETRY_TYPE_TRIANGLE = 0
_RTC_BUFFER_TYPE_INDEX = 0
_RTC_BUFFER_TYPE_VERTEX = 1
_RTC_FORMAT_UINT3 = 0x5003
_RTC_FORMAT_FLOAT3 = 0x9003
_INVALID_ID = 0xFFFFFFFF
_RTC_SCENE_FLAG_ROBUST = 1 << 2
_DEVICE_CONFIG = b"threads=1,set_affinity=0"

# RTCRayHit16: 16-lane SoA rows of 4-byte values, 64-byte aligned.
# ray: org_x org_y org_z tnear dir_x dir_y dir_z time tfar mask id flags
# hit: Ng_x Ng_y Ng_z u v primID geomID instID[1] instPrimID[1]   (21 rows = 1344 bytes)
_W = 16
_ROW = {"org": 0, "tnear": 3, "dir": 4, "time": 7, "tfar": 8, "mask": 9, "id": 10, "flags": 11, "prim": 17, "geom": 18}
_N_ROWS_USED = 21
_PACKET_ROWS = 24  # 1536-byte stride per packet (>= sizeof(RTCRayHit16), multiple of 64)

_lock = threading.Lock()
_lib = None
_device = None
_load_error: str | None = None


def _find_library() -> str | None:
    try:
        import embreex
    except ImportError:
        return None
    base = os.path.dirname(os.path.dirname(os.path.abspath(embreex.__file__)))
    for pattern in ("embreex.libs/libembree4*.so*", "embreex/.dylibs/libembree4*.dylib", "embreex/libembree4*.so*"):
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    return None


def _load() -> bool:
    global _lib, _device, _load_error
    if _device is not None:
        return True
    if _load_error is not None:
        return False
    with _lock:
        if _device is not None:
            return True
        try:
            path = _find_library()
            if path is None:
                raise OSError("libembree4 not found next to embreex")
            lib = ctypes.CDLL(path)
            vp, u32, sz = ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t
            sigs = {
                "rtcNewDevice": (vp, [ctypes.c_char_p]),
                "rtcGetDeviceError": (ctypes.c_int, [vp]),
                "rtcNewScene": (vp, [vp]),
                "rtcNewGeometry": (vp, [vp, ctypes.c_int]),
                "rtcSetSharedGeometryBuffer": (None, [vp, ctypes.c_int, u32, ctypes.c_int, vp, sz, sz, sz]),
                "rtcCommitGeometry": (None, [vp]),
                "rtcAttachGeometry": (u32, [vp, vp]),
                "rtcReleaseGeometry": (None, [vp]),
                "rtcSetSceneFlags": (None, [vp, ctypes.c_int]),
                "rtcCommitScene": (None, [vp]),
                "rtcReleaseScene": (None, [vp]),
                "rtcIntersect16": (None, [vp, vp, vp, vp]),
            }
            for name, (res, args) in sigs.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            device = lib.rtcNewDevice(_DEVICE_CONFIG)
            if not device:
                raise OSError(f"rtcNewDevice failed (error {lib.rtcGetDeviceError(None)})")
            _lib, _device = lib, device
            return True
        except (OSError, AttributeError) as e:
            _load_error = f"{type(e).__name__}: {e}"
            return False


def available() -> bool:
    return _load()


def _aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + n].view(dtype).reshape(shape)


_local = threading.local()


def _packets(npk: int):
    """A per-thread reusable buffer of at least `npk` RTCRayHit16 packets (the fields Embree never writes are set
    once) and one ctypes pointer per packet (making them costs more than the calls). Grows, never shrinks."""
    cache = getattr(_local, "packets", None)
    if cache is not None and cache[0].shape[0] >= npk:
        return cache
    npk = max(npk, 64)
    pk = _aligned_empty((npk, _PACKET_ROWS, _W), np.float32)
    pk_u = pk.view(np.uint32)
    pk_u[:] = 0
    pk_u[:, _ROW["mask"]] = _INVALID_ID
    pk_u[:, 19:_N_ROWS_USED] = _INVALID_ID  # instID, instPrimID
    base, stride = pk.ctypes.data, pk.strides[0]
    ptrs = [ctypes.c_void_p(base + i * stride) for i in range(npk)]
    valid = _aligned_empty((2, _W), np.int32)
    _local.packets = (pk, pk_u, ptrs, valid)
    return _local.packets


class Scene:
    """One committed Embree scene of triangles (vertices (V, 3) float32, faces (F, 3) int), robust mode; the
    buffers are shared with numpy and kept alive by this object. Use as a context manager (or call close())."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        if not _load():
            raise RuntimeError(f"embree not available: {_load_error}")
        lib = _lib
        nv, nf = len(vertices), len(faces)
        # float4 vertex layout: Embree reads 16 bytes per vertex, so the shared buffer gets a padded 4th lane
        self._vbuf = np.zeros((nv + 1, 4), dtype=np.float32)
        self._vbuf[:nv, :3] = vertices
        self._ibuf = np.ascontiguousarray(faces, dtype=np.uint32)
        self._scene = lib.rtcNewScene(_device)
        try:
            # robust mode: watertight triangle tests, so a ray through a shared edge or vertex cannot slip through
            # the surface (the fast 16-wide kernels otherwise can, which embreex's single-ray path happens not to)
            lib.rtcSetSceneFlags(self._scene, _RTC_SCENE_FLAG_ROBUST)
            geom = lib.rtcNewGeometry(_device, _RTC_GEOMETRY_TYPE_TRIANGLE)
            lib.rtcSetSharedGeometryBuffer(
                geom, _RTC_BUFFER_TYPE_VERTEX, 0, _RTC_FORMAT_FLOAT3, self._vbuf.ctypes.data, 0, 16, nv
            )
            lib.rtcSetSharedGeometryBuffer(
                geom, _RTC_BUFFER_TYPE_INDEX, 0, _RTC_FORMAT_UINT3, self._ibuf.ctypes.data, 0, 12, nf
            )
            lib.rtcCommitGeometry(geom)
            lib.rtcAttachGeometry(self._scene, geom)
            lib.rtcReleaseGeometry(geom)
            lib.rtcCommitScene(self._scene)
            err = lib.rtcGetDeviceError(_device)
            if err:
                raise RuntimeError(f"embree error {err} while building the scene")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._scene:
            _lib.rtcReleaseScene(self._scene)
            self._scene = None

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def intersect_packets(self, org: np.ndarray, dirs: np.ndarray, n_last: int = _W):
        """Nearest hits of `npk` 16-ray packets given SoA as (npk, 3, 16) float32 origins and directions; the
        last packet's lanes from `n_last` on are inactive (their results are misses). Every packet is the same
        Embree call whatever the others are, so a ray's answer depends only on its own packet.
        Returns (primID int32 (npk * 16,), -1 on a miss; tfar float32, inf on a miss): views into a reused
        buffer, valid until the next call in this thread."""
        npk = len(org)
        pk, pk_u, ptrs, valid = _packets(npk)
        if npk == 0:
            return pk_u[:0, _ROW["prim"]].reshape(-1).view(np.int32), pk[:0, _ROW["tfar"]].reshape(-1)
        pk[:npk, 0:3] = org
        pk[:npk, 4:7] = dirs
        pk[:npk, _ROW["tfar"]] = np.inf
        pk_u[:npk, _ROW["prim"]] = _INVALID_ID
        pk_u[:npk, _ROW["geom"]] = _INVALID_ID
        valid[:] = -1
        valid[1, n_last:] = 0
        lib = _lib
        fn, sc = lib.rtcIntersect16, ctypes.c_void_p(self._scene)
        full = ctypes.c_void_p(valid.ctypes.data)
        for p in ptrs[: npk - 1]:
            fn(full, sc, p, None)
        fn(ctypes.c_void_p(valid.ctypes.data + valid.strides[0]), sc, ptrs[npk - 1], None)
        err = lib.rtcGetDeviceError(_device)
        if err:
            raise RuntimeError(f"embree error {err} while casting")
        return pk_u[:npk, _ROW["prim"]].reshape(-1).view(np.int32), pk[:npk, _ROW["tfar"]].reshape(-1)


def intersect(
    vertices: np.ndarray,
    faces: np.ndarray,
    origins: np.ndarray,
    directions: np.ndarray,
):
    """One scene of triangles (vertices (V, 3) float32, faces (F, 3) int) hit by rays from `origins` (N, 3)
    along `directions` (N, 3). Returns (primID int64, -1 on a miss; tfar float32, inf on a miss)."""
    n = len(origins)
    npk = -(-n // _W)
    pad = npk * _W - n
    soa = []
    for x in (origins, directions):
        x = np.asarray(x, dtype=np.float32).reshape(n, 3)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        soa.append(x.reshape(npk, _W, 3).transpose(0, 2, 1))
    with Scene(vertices, faces) as scene:
        prim, tfar = scene.intersect_packets(soa[0], soa[1], _W - pad)
        return prim[:n].astype(np.int64), tfar[:n].copy()
