"""EM views: three cardinal slabs and the best oblique slab, RGB uint8 (ARCHITECTURE.md, contract §3).

R = EM (mean of a 3-voxel slab) normalised to its 1st-99th percentile; G = 255 where the slab's central plane
is labelled segment A, B = 255 where it is labelled B (exactly 0/255). The segmentation's labels are exclusive,
so G and B never overlap. Resampling to isotropic voxels is done in one step: every view samples an isotropic
grid (slab spacing = the finest voxel axis, W/res in plane) straight from the anisotropic cutout, EM trilinear,
masks nearest; no second 2D resize, so the masks can never be blurred by the EM's filter.

Orientation: xy = slab along z, columns x, rows y; xz = along y, columns x, rows z; yz = along x,
columns y, rows z (row 0 at the low coordinate).

Best view: every candidate plane is scored on a coarse grid; the best few are then rendered at the output
resolution and scored, with the three cardinal views, on their 224 px masks (central 75%); the highest wins,
ties going to a cardinal view (xy, xz, yz) first. When a cardinal view wins, the best view is that view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.errors import SampleError
from core.fetched import MISSING_BITS

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
RESCORE_CANDIDATES = 6  # oblique planes of the coarse search re-scored at the output resolution
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


def _compose(em_slab: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB from the slab mean and the central plane's bits (bit 0 = segment A, bit 1 = segment B)."""
    rgb = np.empty(em_slab.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = _normalise(em_slab)
    np.multiply(labels & 1, 255, out=rgb[..., 1], casting="unsafe")
    np.multiply((labels >> 1) & 1, 255, out=rgb[..., 2], casting="unsafe")
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


class _Plane:
    """Where the pixels of one view sample the cutout. Pixel (row, col) of slab offset o samples
    centre + s[col] * u + s[row] * v + o * n. One in-plane direction of every candidate plane runs along a
    coordinate axis `a`, so sampling separates: lookups in the plane of the two other axes for each of the
    res (line) positions, then along `a`. Same values as sampling every point in 3-D (tests/render/
    test_em_sampling.py holds that plain sampler), at a fraction of the cost. A plane without such an axis (none
    of the candidate planes) is refused."""

    def __init__(self, voxel, center_nm, u, v, n, half_nm, res, slab_nm) -> None:
        self.voxel = voxel
        found = _aligned_axis(u, v, n)
        if found is None:
            raise ValueError(f"plane with normal {tuple(n)} has no in-plane coordinate axis: not separable")
        a, self.along_u = found
        b, g = (k for k in range(3) if k != a)
        self.axes = (a, b, g)
        w = v if self.along_u else u  # the other in-plane direction
        s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * half_nm
        offsets = np.array([-slab_nm, 0.0, slab_nm])
        # same float64 arithmetic as the plain sampler's plane points (zero components add exact zeros)
        self.p_a = center_nm[a] + s * (u[a] if self.along_u else v[a])  # (res,) along the aligned axis
        self.p_b = (center_nm[b] + s * w[b])[:, None] + offsets[None, :] * n[b]  # (res, 3): line, slab offset
        self.p_g = (center_nm[g] + s * w[g])[:, None] + offsets[None, :] * n[g]

    def _oriented(self, img: np.ndarray) -> np.ndarray:
        return img.T if self.along_u else img  # lines along a are columns when a is u's axis

    def em_slab(self, em: np.ndarray) -> np.ndarray:
        """Mean of the trilinear EM samples of the three slab offsets, (res, res) float64."""
        a, b, g = self.axes
        voxel, shape = self.voxel, em.shape
        # bilinear in the (b, g) plane for every slab position, averaged over the slab, then linear along a
        em_t = np.moveaxis(em, (a, b, g), (0, 1, 2))
        b0, b1, wb0, wb1 = _lin_taps(self.p_b / voxel[b] - 0.5, shape[b])
        g0, g1, wg0, wg1 = _lin_taps(self.p_g / voxel[g] - 0.5, shape[g])
        plane = (
            em_t[:, b0, g0] * (wb0 * wg0 / 3.0)
            + em_t[:, b0, g1] * (wb0 * wg1 / 3.0)
            + em_t[:, b1, g0] * (wb1 * wg0 / 3.0)
            + em_t[:, b1, g1] * (wb1 * wg1 / 3.0)
        ).sum(axis=2)  # (n_a, res): slab mean
        a0, a1, wa0, wa1 = _lin_taps(self.p_a / voxel[a] - 0.5, shape[a])
        return self._oriented(plane[a0] * wa0[:, None] + plane[a1] * wa1[:, None])

    def central(self, vol: np.ndarray) -> np.ndarray:
        """The voxel of `vol` containing each pixel's point on the slab's central plane (0 outside), (res, res)."""
        a, b, g = self.axes
        voxel, shape = self.voxel, vol.shape
        vol_t = np.moveaxis(vol, (a, b, g), (0, 1, 2))
        ka, oka = _nearest_idx(self.p_a, voxel[a], shape[a])
        kb, okb = _nearest_idx(self.p_b[:, 1], voxel[b], shape[b])
        kg, okg = _nearest_idx(self.p_g[:, 1], voxel[g], shape[g])
        line = vol_t[:, kb, kg] * (okb & okg)  # (n_a, res along w); outside the volume counts as 0
        return self._oriented(line[ka] * oka[:, None])


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


def score_central(a: np.ndarray, b: np.ndarray) -> float:
    """The best-view score of one output view: log(max(area A, 1)) + log(max(area B, 1)), areas in pixels whose
    centre lies in the central SCORE_FRACTION of the view (rows and columns 28..195 of 224). `a` and `b` are the
    view's mask channels (non-zero = set)."""
    res = a.shape[0]
    i = np.abs((np.arange(res) + 0.5) / res * 2.0 - 1.0) <= SCORE_FRACTION
    lo, hi = int(np.argmax(i)), int(res - np.argmax(i[::-1]))
    area_a = np.count_nonzero(a[lo:hi, lo:hi])
    area_b = np.count_nonzero(b[lo:hi, lo:hi])
    return float(np.log(max(area_a, 1)) + np.log(max(area_b, 1)))


def _bits_score(bits: np.ndarray) -> float:
    return score_central(bits & 1, bits & 2)


def render_em_views(
    em: np.ndarray,
    labels: np.ndarray,
    voxel_nm,
    a_ids,
    b_ids,
    window_nm: float,
    resolution: int = 224,
    missing: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """EM cutout (X, Y, Z) uint8 and root-id labels on the same grid, 1.5 x window wide, centred on the sample
    coordinate -> the four EM views (224, 224, 3) uint8 and an info dict.

    `missing` (optional, same grid, uint8; bits of core.fetched.MISSING_BITS): bit 0 where the EM voxel
    came from an absent chunk, bit 1 where the segmentation's did. info["missing_view_fraction"] then gives, per
    bit ("em", "seg"), the largest fraction of a view's pixels whose central-plane point lies in such a voxel (the
    views' own pixels, not the window)."""
    em = np.asarray(em)
    labels = np.asarray(labels)
    _check_grids(em, labels, missing)
    voxel = np.asarray(voxel_nm, dtype=np.float64).reshape(3)
    centre_nm = np.asarray(em.shape) * voxel / 2.0
    new_centre = _recenter(labels, voxel, a_ids, b_ids) if len(b_ids) > 0 else centre_nm
    win, seg = _window_bits(em, labels, voxel, new_centre, window_nm, a_ids, b_ids)
    # work in window-local coordinates: nm from the window sub-volume's origin
    origin_nm = np.array([s.start for s in win], dtype=np.float64) * voxel
    c = new_centre - origin_nm
    em_w = np.ascontiguousarray(em[win])
    chosen = _choose_planes(seg, voxel, c, float(window_nm) / 2.0, resolution)
    info = {
        "em_recenter_offset_nm": [float(x) for x in (new_centre - centre_nm)],
        "em_view_center_nm": [float(x) for x in new_centre],
        "em_best_normal": [float(x) for x in chosen.best_normal],
        "em_best_score": chosen.best_score,
        "em_cardinal_scores": chosen.scores,
        "em_n_candidate_planes": len(_CANDIDATES),
    }
    if missing is not None:
        info["missing_view_fraction"] = _missing_view_fraction(np.asarray(missing, dtype=np.uint8)[win], chosen)
    return _compose_views(chosen, em_w), info


def _check_grids(em: np.ndarray, labels: np.ndarray, missing: np.ndarray | None) -> None:
    if em.shape != labels.shape or em.ndim != 3:
        raise ValueError(f"em {em.shape} and labels {labels.shape} must be the same 3-D grid")
    if missing is not None and np.shape(missing) != em.shape:
        raise ValueError(f"missing {np.shape(missing)} must be on the EM grid {em.shape}")


def _window_bits(
    em: np.ndarray, labels: np.ndarray, voxel: np.ndarray, centre_nm: np.ndarray, window_nm: float, a_ids, b_ids
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The window around the (recentred) centre, and its segment bits (bit 0 = A, bit 1 = B). A sample whose
    window has no EM, or misses a segment, fails here with its reason."""
    shape = np.asarray(em.shape)
    win = _box(centre_nm / voxel, np.full(3, float(window_nm) / 2.0) / voxel + 1.0, shape)
    if not em[win].any():
        raise SampleError("em_missing", f"EM window is all zero (window {window_nm} nm, cutout {tuple(shape)})")
    lab_win = labels[win]
    a_win, b_win = _id_mask(lab_win, a_ids), _id_mask(lab_win, b_ids)
    if not a_win.any():
        raise SampleError("segment_not_in_cutout", "segment A is absent from the EM window")
    if len(b_ids) > 0 and not b_win.any():
        raise SampleError("segment_not_in_cutout", "segment B is absent from the EM window")
    return win, a_win.astype(np.uint8) | (b_win.astype(np.uint8) << 1)


@dataclass
class _Chosen:
    """The sampling planes and central-plane bits of the cardinal views (and of "best" when an oblique plane
    wins), the cardinal scores, and the winner: its name, score and normal."""

    planes: dict[str, _Plane]
    bits: dict[str, np.ndarray]
    scores: dict[str, float]
    best_name: str
    best_score: float
    best_normal: np.ndarray

    @property
    def best_plane(self) -> _Plane:
        return self.planes[self.best_name if self.best_name in CARDINAL else "best"]


def _choose_planes(seg: np.ndarray, voxel: np.ndarray, c: np.ndarray, half: float, resolution: int) -> _Chosen:
    """Score the cardinal views on their output masks, then the best few oblique planes of the coarse search;
    an oblique plane must score strictly higher than every cardinal view to win."""
    slab = voxel.min()

    def plane(u, v, n) -> _Plane:
        return _Plane(voxel, c, np.asarray(u), np.asarray(v), np.asarray(n), half, resolution, slab)

    planes = {name: plane(*_CARDINAL_AXES[name], CARDINAL[name]) for name in CARDINAL}
    bits = {name: p.central(seg) for name, p in planes.items()}
    scores = {name: _bits_score(b) for name, b in bits.items()}
    # the best few oblique planes of the coarse search, rendered at the output resolution and scored there
    coarse = _score_all(seg, voxel, c, half)
    oblique = [i for i in np.argsort(-coarse, kind="stable") if i >= len(CARDINAL)][:RESCORE_CANDIDATES]
    best_name, best_score, best_n = "xy", scores["xy"], np.asarray(CARDINAL["xy"])
    for name in CARDINAL:  # cardinal first: an oblique plane must score strictly higher to win
        if scores[name] > best_score:
            best_name, best_score, best_n = name, scores[name], np.asarray(CARDINAL[name])
    for i in oblique:
        n = np.asarray(_CANDIDATES[i])
        p = plane(*_in_plane_axes(n), n)
        b = p.central(seg)
        sc = _bits_score(b)
        if sc > best_score:
            best_name, best_score, best_n = f"candidate {int(i)}", sc, n
            planes["best"], bits["best"] = p, b
    return _Chosen(planes, bits, scores, best_name, best_score, best_n)


def _compose_views(chosen: _Chosen, em_w: np.ndarray) -> dict[str, np.ndarray]:
    """The four RGB views; a cardinal winner's best view is a copy of that view."""
    views: dict[str, np.ndarray] = {}
    for name in CARDINAL:
        views[f"em_{name}_before"] = _compose(chosen.planes[name].em_slab(em_w), chosen.bits[name])
    if chosen.best_name in CARDINAL:
        views["em_best_before"] = views[f"em_{chosen.best_name}_before"].copy()
    else:
        views["em_best_before"] = _compose(chosen.planes["best"].em_slab(em_w), chosen.bits["best"])
    return {k: views[k] for k in ("em_xy_before", "em_xz_before", "em_yz_before", "em_best_before")}


def _missing_view_fraction(miss_w: np.ndarray, chosen: _Chosen) -> dict[str, float]:
    """Per bit ("em" 1, "seg" 2), the largest fraction of a view's pixels whose central-plane point lies in a
    voxel from an absent chunk."""
    view_planes = [chosen.planes[name] for name in CARDINAL] + [chosen.best_plane]
    looked = [p.central(miss_w) for p in view_planes]
    return {
        what: max(float(np.count_nonzero(m & bit)) / m.size for m in looked) for what, bit in MISSING_BITS.items()
    }
