"""EM views: three cardinal slabs and the best oblique slab, RGB uint8 (CONTRACT.md section 3).

R = EM (mean of a 3-voxel slab) normalised to its 1st-99th percentile; G = 255 where segment A is in the
slab, B = 255 where segment B is (exactly 0/255). Resampling to isotropic voxels is done in one step:
every view samples an isotropic grid (slab spacing = the finest voxel axis, W/res in
plane) straight from the anisotropic cutout, EM trilinear, masks nearest; no second 2D resize, so the
masks can never be blurred by the EM's filter.

Orientation: xy = slab along z, columns x, rows y; xz = along y, columns x, rows z; yz = along x,
columns y, rows z (row 0 at the low coordinate).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.errors import SampleError

CARDINAL = {"xy": (0.0, 0.0, 1.0), "xz": (0.0, 1.0, 0.0), "yz": (1.0, 0.0, 0.0)}
# in-plane (column, row) axes of the cardinal views
_CARDINAL_AXES = {
    "xy": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "xz": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "yz": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}
RECENTER_FRACTION = 0.30
SCORE_FRACTION = 0.75
SCORE_GRID = 48
EDT_MIN_SPACING_NM = 24.0
_AXIS_TOL = 1e-9


def candidate_normals() -> list[tuple[float, float, float]]:
    """Plane normals on the three coordinate great circles, -90..+90 degrees in 10-degree steps,
    deduplicated up to sign: 51 planes, the three cardinal ones first."""
    out: list[tuple[float, float, float]] = []
    seen: set[tuple[float, ...]] = set()

    def add(n):
        n = np.asarray(n, dtype=np.float64)
        n = n / np.linalg.norm(n)
        nz = n[np.flatnonzero(np.abs(n) > 1e-9)[0]]
        n = n if nz > 0 else -n
        key = tuple(np.round(n, 6))
        if key not in seen:
            seen.add(key)
            out.append(tuple(float(x) + 0.0 for x in np.round(n, 12)))

    for n in CARDINAL.values():
        add(n)
    e = np.eye(3)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        for deg in range(-90, 91, 10):
            t = np.deg2rad(deg)
            add(np.cos(t) * e[a] + np.sin(t) * e[b])
    return out


def _in_plane_axes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, n)
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    return u, v


# computed once: the candidate normals and their in-plane axes, stacked (n_planes, 3) each
_CANDIDATES = tuple(candidate_normals())
_CANDIDATE_UVN = tuple(
    np.stack(x) for x in zip(*((*_in_plane_axes(np.asarray(n)), np.asarray(n)) for n in _CANDIDATES), strict=True)
)


def _id_mask(labels: np.ndarray, ids) -> np.ndarray:
    ids = [int(i) for i in ids]
    if not ids:
        return np.zeros(labels.shape, dtype=bool)
    if len(ids) <= 8:
        m = labels == np.uint64(ids[0])
        for i in ids[1:]:
            m |= labels == np.uint64(i)
        return m
    return np.isin(labels, np.asarray(ids, dtype=np.uint64))


def _box(center_vox: np.ndarray, half_vox: np.ndarray, shape) -> tuple[slice, ...]:
    lo = np.clip(np.floor(center_vox - half_vox).astype(int), 0, None)
    hi = np.minimum(np.ceil(center_vox + half_vox).astype(int), shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _recenter(labels, voxel, a_ids, b_ids) -> np.ndarray:
    """Voxel-centre position (nm from the cutout origin) minimising dt_A + dt_B in the central 30%.
    Distance transforms are computed on the central 30% plus a margin of 10% per side, on a grid strided to
    >= EDT_MIN_SPACING_NM; ties go to the candidate nearest the cutout centre."""
    shape = np.asarray(labels.shape)
    center_vox = shape / 2.0
    stride = np.maximum(1, np.floor(EDT_MIN_SPACING_NM / voxel)).astype(int)
    region = _box(center_vox, shape * (RECENTER_FRACTION / 2 + 0.10), shape)
    sub = labels[region][:: stride[0], :: stride[1], :: stride[2]]
    a, b = _id_mask(sub, a_ids), _id_mask(sub, b_ids)
    origin = np.array([s.start for s in region], dtype=np.float64)
    pos = [(origin[k] + np.arange(sub.shape[k]) * stride[k] + 0.5) * voxel[k] for k in range(3)]
    centre_nm = shape * voxel / 2.0
    inner = [
        np.abs(p - c) <= RECENTER_FRACTION / 2 * s * v for p, c, s, v in zip(pos, centre_nm, shape, voxel, strict=True)
    ]
    if not (a.any() and b.any()):
        return centre_nm
    spacing = voxel * stride
    total = ndimage.distance_transform_edt(~a, sampling=spacing) + ndimage.distance_transform_edt(~b, sampling=spacing)
    allowed = inner[0][:, None, None] & inner[1][None, :, None] & inner[2][None, None, :]
    if not allowed.any():
        return centre_nm
    total = np.where(allowed, total, np.inf)
    best = total.min()
    cand = np.argwhere(total <= best + 1e-6)
    cand_nm = np.stack([pos[k][cand[:, k]] for k in range(3)], axis=1)
    d = np.linalg.norm(cand_nm - centre_nm, axis=1)
    return cand_nm[int(np.argmin(d))]


def _sample(vol: np.ndarray, voxel, points_nm: np.ndarray) -> np.ndarray:
    """Trilinear sample of `vol` at points (nm from the volume origin); voxel i's centre is at (i + 0.5) * voxel."""
    coords = (points_nm / voxel - 0.5).reshape(-1, 3).T
    return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0, prefilter=False).reshape(
        points_nm.shape[:-1]
    )


def _nearest(vol: np.ndarray, voxel, points_nm: np.ndarray) -> np.ndarray:
    """Nearest-voxel lookup (the voxel containing each point), 0 outside the volume."""
    idx = np.floor(points_nm / voxel).astype(np.int64)
    shape = np.asarray(vol.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=-1)
    idx = np.where(ok[..., None], idx, 0)
    return np.where(ok, vol[idx[..., 0], idx[..., 1], idx[..., 2]], 0)


def _plane_points(center_nm, u, v, n, half_nm, res, offsets_nm) -> np.ndarray:
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * half_nm
    grid = center_nm + s[None, :, None] * u + s[:, None, None] * v  # (rows, cols, 3)
    return np.stack([grid + o * n for o in offsets_nm])  # (slab, rows, cols, 3)


_PCT = np.array([1.0, 99.0])
_PCT_Q = np.true_divide(_PCT, 100)
_PCT_SAMPLE_STEP = 17  # coprime with the image width, so the sample is not a set of columns


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation of np.percentile (numpy/lib/_function_base_impl.py: _lerp)."""
    diff_b_a = b - a
    out = np.add(a, diff_b_a * t)
    np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype.type)
    return out


def percentile_1_99(x: np.ndarray) -> np.ndarray:
    """np.percentile(x, [1, 99]) (method 'linear'), bit for bit, without partitioning all of x: the order
    statistics needed sit among the elements <= / >= thresholds taken from a strided sample (if a threshold
    does not leave enough elements, or x is small or not finite, it is np.percentile itself)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    if n < 4096 or not np.isfinite(x).all():
        return np.percentile(x, _PCT)
    vi = (n - 1) * _PCT_Q  # numpy's virtual indexes, previous / next indexes and gamma for method 'linear'
    prev = np.floor(vi)
    nxt = np.minimum(prev + 1, n - 1).astype(np.intp)
    prev = prev.astype(np.intp)
    gamma = vi - prev
    need_lo, need_hi = int(nxt[0]) + 1, n - int(prev[1])  # how many of the smallest / largest elements
    step = _PCT_SAMPLE_STEP
    sample = x[::step]
    r_lo = need_lo // step + 2 + int(3 * np.sqrt(need_lo / step + 1))
    r_hi = len(sample) - 1 - (need_hi // step + 2 + int(3 * np.sqrt(need_hi / step + 1)))
    if r_lo >= r_hi:
        return np.percentile(x, _PCT)
    sp = np.partition(sample, [r_lo, r_hi])
    low = x[x <= sp[r_lo]]  # the len(low) smallest elements of x
    high = x[x >= sp[r_hi]]  # the len(high) largest
    if len(low) < need_lo or len(high) < need_hi:
        return np.percentile(x, _PCT)
    off = n - len(high)
    low = np.partition(low, [int(prev[0]), int(nxt[0])])
    high = np.partition(high, [int(prev[1]) - off, int(nxt[1]) - off])
    a = np.array([low[prev[0]], high[prev[1] - off]])
    b = np.array([low[nxt[0]], high[nxt[1] - off]])
    return _lerp(a, b, gamma)


def _normalise(em: np.ndarray) -> np.ndarray:
    lo, hi = percentile_1_99(em)
    if hi <= lo:
        return np.zeros(em.shape, dtype=np.uint8)
    return np.clip(np.round((em - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def _render_view_generic(em, seg, voxel, center_nm, u, v, n, half_nm, res, slab_nm) -> np.ndarray:
    """Any plane: 3-D trilinear EM and nearest masks at every slab point (used only when no in-plane axis is
    a coordinate axis, which never happens for the candidate planes)."""
    pts = _plane_points(center_nm, u, v, n, half_nm, res, (-slab_nm, 0.0, slab_nm))
    em_slab = _sample(em.astype(np.float64), voxel, pts).mean(axis=0)
    in_slab = np.bitwise_or.reduce(_nearest(seg, voxel, pts), axis=0)
    return _compose(em_slab, in_slab)


def _compose(em_slab: np.ndarray, in_slab: np.ndarray) -> np.ndarray:
    rgb = np.empty(em_slab.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = _normalise(em_slab)
    np.multiply(in_slab & 1, 255, out=rgb[..., 1], casting="unsafe")
    np.multiply((in_slab >> 1) & 1, 255, out=rgb[..., 2], casting="unsafe")
    return rgb


def _aligned_axis(u: np.ndarray, v: np.ndarray, n: np.ndarray) -> tuple[int, bool] | None:
    """A coordinate axis that one in-plane direction runs along and the other two vectors are orthogonal to:
    (axis, True if it is u / False if v), or None."""
    for a in range(3):
        if abs(n[a]) > _AXIS_TOL:
            continue
        if abs(v[a]) <= _AXIS_TOL and abs(abs(u[a]) - 1.0) <= _AXIS_TOL:
            return a, True
        if abs(u[a]) <= _AXIS_TOL and abs(abs(v[a]) - 1.0) <= _AXIS_TOL:
            return a, False
    return None


def _lin_taps(coords: np.ndarray, n: int):
    """Linear-interpolation taps along one axis with map_coordinates(order=1, mode='constant') semantics:
    a coordinate outside [0, n-1] gets weight 0. Returns (i0, i1, w0, w1), each shaped like `coords`."""
    ok = (coords >= 0.0) & (coords <= n - 1)
    c = np.where(ok, coords, 0.0)
    i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
    w1 = c - i0
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, np.where(ok, 1.0 - w1, 0.0), np.where(ok, w1, 0.0)


def _nearest_idx(p_nm: np.ndarray, voxel_k: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The voxel containing each coordinate (clipped into range) and whether it is inside the volume."""
    idx = np.floor(p_nm / voxel_k).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    return np.where(ok, idx, 0), ok


def _render_view(em, seg, voxel, center_nm, u, v, n, half_nm, res, slab_nm) -> np.ndarray:
    """`seg` is uint8 with bit 0 = segment A, bit 1 = segment B. Pixel (row, col) of slab offset o samples
    centre + s[col] * u + s[row] * v + o * n. One in-plane direction of every candidate plane runs along a
    coordinate axis `a`, so sampling separates: bilinear (EM) / nearest (masks) lookups in the plane of the two
    other axes for each of the res x 3 (line, slab) positions, then linear / nearest along `a`. Same values as
    trilinear sampling of every slab point, at a fraction of the cost."""
    found = _aligned_axis(u, v, n)
    if found is None:
        return _render_view_generic(em, seg, voxel, center_nm, u, v, n, half_nm, res, slab_nm)
    a, along_u = found
    b, g = (k for k in range(3) if k != a)
    w = v if along_u else u  # the other in-plane direction
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * half_nm
    offsets = np.array([-slab_nm, 0.0, slab_nm])
    # same float64 arithmetic as _plane_points (zero components add exact zeros)
    p_a = center_nm[a] + s * (u[a] if along_u else v[a])  # (res,) along the aligned axis
    p_b = (center_nm[b] + s * w[b])[:, None] + offsets[None, :] * n[b]  # (res, 3): line position, slab offset
    p_g = (center_nm[g] + s * w[g])[:, None] + offsets[None, :] * n[g]
    shape = em.shape
    # EM: bilinear in the (b, g) plane for every slab position, averaged over the slab, then linear along a
    em_t = np.moveaxis(em, (a, b, g), (0, 1, 2))
    b0, b1, wb0, wb1 = _lin_taps(p_b / voxel[b] - 0.5, shape[b])
    g0, g1, wg0, wg1 = _lin_taps(p_g / voxel[g] - 0.5, shape[g])
    plane = (
        em_t[:, b0, g0] * (wb0 * wg0 / 3.0)
        + em_t[:, b0, g1] * (wb0 * wg1 / 3.0)
        + em_t[:, b1, g0] * (wb1 * wg0 / 3.0)
        + em_t[:, b1, g1] * (wb1 * wg1 / 3.0)
    ).sum(axis=2)  # (n_a, res): slab mean
    a0, a1, wa0, wa1 = _lin_taps(p_a / voxel[a] - 0.5, shape[a])
    em_line = plane[a0] * wa0[:, None] + plane[a1] * wa1[:, None]  # (res along a, res along w)
    # masks: the voxel containing each slab point, OR over the slab
    seg_t = np.moveaxis(seg, (a, b, g), (0, 1, 2))
    ka, oka = _nearest_idx(p_a, voxel[a], shape[a])
    kb, okb = _nearest_idx(p_b, voxel[b], shape[b])
    kg, okg = _nearest_idx(p_g, voxel[g], shape[g])
    # OR over the slab in the (b, g) plane first (the lookup along a is the same for every slab position)
    ok = okb & okg  # (res, slab)
    line = seg_t[:, kb[:, 0], kg[:, 0]] * ok[:, 0]  # (n_a, res along w)
    for j in range(1, kb.shape[1]):
        line |= seg_t[:, kb[:, j], kg[:, j]] * ok[:, j]
    sub = line[ka] * oka[:, None]  # (res along a, res along w); outside the volume counts as 0
    if along_u:  # lines along a are columns
        em_line, sub = em_line.T, sub.T
    return _compose(em_line, sub)


def _score_all(seg, voxel, center_nm, half_nm) -> np.ndarray:
    """Scores of every candidate plane: log(max(area A, 1)) + log(max(area B, 1)), areas in samples of a
    SCORE_GRID^2 grid over the central 75% (nearest voxel, 0 outside). All planes in one vectorised lookup,
    one coordinate axis at a time: sample (row, col) of plane p is centre + s[col] * u_p + s[row] * v_p."""
    u, v, _ = _CANDIDATE_UVN
    s = ((np.arange(SCORE_GRID) + 0.5) / SCORE_GRID * 2.0 - 1.0) * (half_nm * SCORE_FRACTION)
    shape = seg.shape
    flat = np.zeros((len(u), SCORE_GRID, SCORE_GRID), dtype=np.intp)
    ok = np.ones(flat.shape, dtype=bool)
    for k in range(3):
        q = center_nm[k] + s[None, None, :] * u[:, k, None, None]
        q = q + s[None, :, None] * v[:, k, None, None]
        q = np.floor(q / voxel[k])  # the voxel containing the point
        ok &= (q >= 0) & (q < shape[k])
        flat *= shape[k]
        flat += q.astype(np.intp)  # garbage where not ok: masked below
    vals = np.where(ok, seg.reshape(-1)[np.where(ok, flat, 0)], 0)
    area_a = np.count_nonzero(vals & 1, axis=(1, 2)).astype(np.float64)
    area_b = np.count_nonzero(vals & 2, axis=(1, 2)).astype(np.float64)
    return np.log(np.maximum(area_a, 1.0)) + np.log(np.maximum(area_b, 1.0))


def render_em_views(
    em: np.ndarray, labels: np.ndarray, voxel_nm, a_ids, b_ids, window_nm: float, resolution: int = 224
) -> tuple[dict[str, np.ndarray], dict]:
    """EM cutout (X, Y, Z) uint8 and root-id labels on the same grid, 1.5 x window wide, centred on the sample
    coordinate -> the four EM views (224, 224, 3) uint8 and an info dict."""
    em = np.asarray(em)
    labels = np.asarray(labels)
    if em.shape != labels.shape or em.ndim != 3:
        raise ValueError(f"em {em.shape} and labels {labels.shape} must be the same 3-D grid")
    voxel = np.asarray(voxel_nm, dtype=np.float64).reshape(3)
    shape = np.asarray(em.shape)
    two = len(b_ids) > 0
    centre_nm = shape * voxel / 2.0
    new_centre = _recenter(labels, voxel, a_ids, b_ids) if two else centre_nm

    half = float(window_nm) / 2.0
    win = _box(new_centre / voxel, np.full(3, half) / voxel + 1.0, shape)
    if not em[win].any():
        raise SampleError("em_missing", f"EM window is all zero (window {window_nm} nm, cutout {tuple(shape)})")
    lab_win = labels[win]
    a_win, b_win = _id_mask(lab_win, a_ids), _id_mask(lab_win, b_ids)
    if not a_win.any():
        raise SampleError("segment_not_in_cutout", "segment A is absent from the EM window")
    if two and not b_win.any():
        raise SampleError("segment_not_in_cutout", "segment B is absent from the EM window")
    # work in window-local coordinates: nm from the window sub-volume's origin
    origin_nm = np.array([s.start for s in win], dtype=np.float64) * voxel
    c = new_centre - origin_nm
    em_w = np.ascontiguousarray(em[win])
    seg = a_win.astype(np.uint8) | (b_win.astype(np.uint8) << 1)

    views: dict[str, np.ndarray] = {}
    for name, (u, v) in _CARDINAL_AXES.items():
        n = np.asarray(CARDINAL[name])
        views[f"em_{name}_before"] = _render_view(
            em_w, seg, voxel, c, np.asarray(u), np.asarray(v), n, half, resolution, voxel.min()
        )
    normals = _CANDIDATES
    scores = _score_all(seg, voxel, c, half)
    best_i = int(np.argmax(scores))  # first maximum: cardinal planes come first in the candidate order
    best_n = np.asarray(normals[best_i])
    bu, bv = _in_plane_axes(best_n)
    views["em_best_before"] = _render_view(em_w, seg, voxel, c, bu, bv, best_n, half, resolution, voxel.min())
    info = {
        "em_recenter_offset_nm": [float(x) for x in (new_centre - centre_nm)],
        "em_best_normal": [float(x) for x in best_n],
        "em_best_score": float(scores[best_i]),
        "em_cardinal_scores": {name: float(scores[i]) for i, name in enumerate(CARDINAL)},
        "em_n_candidate_planes": len(normals),
    }
    return {k: views[k] for k in ("em_xy_before", "em_xz_before", "em_yz_before", "em_best_before")}, info
