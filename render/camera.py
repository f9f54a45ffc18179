"""Orthographic cameras of the three geometry views (ARCHITECTURE.md, contract §2).

front looks along +x with +z up; side along +y with +z up; top along -z with +y up.
Camera space: x right, y up, z towards the viewer; right = forward x up.
The field of view is square, 2 * extent_nm wide; pixel row 0 is the top, column 0 the left.
Pixel (row, col) samples the point at its centre: u = (col + 0.5) / res * 2 - 1, v = 1 - (row + 0.5) / res * 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VIEWS = ("front", "side", "top")
_AXES = {
    "front": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "side": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}


@dataclass(frozen=True)
class OrthoCamera:
    center_nm: tuple[float, float, float]
    forward: tuple[float, float, float]
    up: tuple[float, float, float]
    right: tuple[float, float, float]
    half_width_nm: float
    resolution: int = 224

    def basis(self) -> np.ndarray:
        """Rows: right, up, towards-viewer (= -forward); world -> camera is `basis @ (p - c)`."""
        return np.array([self.right, self.up, [-c for c in self.forward]], dtype=np.float64)


def view_cameras(center_nm, extent_nm: float, resolution: int = 224) -> list[OrthoCamera]:
    center = tuple(float(c) for c in np.asarray(center_nm, dtype=np.float64).reshape(3))
    cams = []
    for view in VIEWS:
        fwd, up = _AXES[view]
        right = tuple(float(c) for c in np.cross(fwd, up))
        cams.append(OrthoCamera(center, fwd, up, right, float(extent_nm), int(resolution)))
    return cams


def to_camera(cam: OrthoCamera, points_nm) -> np.ndarray:
    """World points (N, 3) -> camera-space coordinates (N, 3): x right, y up, z towards the viewer."""
    p = np.asarray(points_nm, dtype=np.float64).reshape(-1, 3) - np.asarray(cam.center_nm)
    return p @ cam.basis().T


def project_points(cam: OrthoCamera, points_nm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points -> (row, col, depth) as floats; integer part of row/col is the pixel, depth along forward."""
    q = to_camera(cam, points_nm)
    res = cam.resolution
    col = (q[:, 0] / cam.half_width_nm + 1.0) * 0.5 * res
    row = (1.0 - q[:, 1] / cam.half_width_nm) * 0.5 * res
    return row, col, -q[:, 2]


def pixel_rays(cam: OrthoCamera, back_off_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Origins (res*res, 3) in world nm, one per pixel centre in row-major order, on a plane `back_off_nm`
    behind the centre; all rays share the direction `forward`."""
    res = cam.resolution
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * cam.half_width_nm
    u = np.tile(s, res)  # column coordinate, varies fastest
    v = np.repeat(-s, res)  # row 0 is the top (largest up)
    right, up, fwd = (np.asarray(a, dtype=np.float64) for a in (cam.right, cam.up, cam.forward))
    origins = np.asarray(cam.center_nm) + u[:, None] * right + v[:, None] * up - back_off_nm * fwd
    return origins, np.broadcast_to(fwd, origins.shape)
