"""Per-sample cost of the render core on synthetic data (no I/O): geometry, EM views, encoding, and the
"floor" (encoding alone: the npz + 4 PNGs of the same arrays). CPU time (process_time) per sample, so the
figures are per core even where a library uses threads.

    .venv/bin/python -m benchmarks.bench_render_core [--faces 50000] [--reps 10]   (also in `make bench`)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import trimesh

from render.em_views import render_em_views
from render.encode import encode_geometry, encode_png
from render.geometry import CROP_FACTOR, crop_mesh, render_geometry

CENTER = np.array([300000.0, 200000.0, 100000.0])
EXTENT = 3000.0


def tube_mesh(seed: int, n_faces: int) -> trimesh.Trimesh:
    """A neuron-like bundle of 5 wavy tubes through the centre, about n_faces faces, roughly isotropic faces."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(5):
        radius, length = rng.uniform(150, 400), 2.4 * EXTENT
        per = n_faces // 5
        # choose ring count and sections so faces are about as long as wide
        around = max(8, int(np.sqrt(per / 2 * 2 * np.pi * radius / length)))
        rings = max(2, per // (2 * around) + 1)
        th = np.linspace(0, 2 * np.pi, around, endpoint=False)
        z = np.linspace(-length / 2, length / 2, rings)
        r = radius * (1 + 0.2 * np.sin(z / 300.0))[:, None]
        v = np.stack([r * np.cos(th), r * np.sin(th), np.broadcast_to(z[:, None], (rings, around))], -1)
        v = v.reshape(-1, 3)
        a = np.arange(rings - 1)[:, None] * around
        b = np.arange(around)[None, :]
        p, q = a + b, a + (b + 1) % around
        f = np.concatenate([np.stack([p, q, p + around], -1), np.stack([q, q + around, p + around], -1)], 1)
        m = trimesh.Trimesh(v, f.reshape(-1, 3), process=False)
        t = trimesh.transformations.random_rotation_matrix(rng.random(3))
        t[:3, 3] = rng.normal(0, 500, 3) + CENTER
        parts.append(m.apply_transform(t))
    return trimesh.util.concatenate(parts)


def em_cutout(voxel=(16.0, 16.0, 40.0), window=1500.0, seed=0):
    voxel = np.asarray(voxel)
    n = np.round(1.5 * window / voxel).astype(int)
    em = np.random.default_rng(seed).integers(40, 220, size=n).astype(np.uint8)
    x, y, z = [(np.arange(k) + 0.5) * v - k * v / 2 for k, v in zip(n, voxel, strict=True)]
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    lab = np.full(n, 5, np.uint64)
    lab[(xx - 150) ** 2 + (yy - 100) ** 2 < 250**2] = 11
    lab[(xx + 200) ** 2 + (zz - 50) ** 2 < 200**2] = 22
    return em, lab, voxel, window


def run(faces: int = 50000, reps: int = 10) -> dict[str, float]:
    """CPU seconds per sample of each step of the render core, on a dual pair of `faces` faces in all."""
    a, b = tube_mesh(0, faces // 2), tube_mesh(1, faces // 2)
    em, lab, voxel, window = em_cutout()
    print(f"meshes: {len(a.faces)} + {len(b.faces)} faces; EM cutout {em.shape} voxels {tuple(voxel)}")
    t = {"crop": 0.0, "geometry": 0.0, "em": 0.0, "encode": 0.0}
    for _ in range(reps):
        c0 = time.process_time()
        ca, cb = crop_mesh(a, CENTER, CROP_FACTOR * EXTENT), crop_mesh(b, CENTER, CROP_FACTOR * EXTENT)
        c1 = time.process_time()
        geom = render_geometry([ca, cb], CENTER, EXTENT)
        c2 = time.process_time()
        views, _ = render_em_views(em, lab, voxel, {11}, {22}, window)
        c3 = time.process_time()
        encode_geometry(geom)
        for img in views.values():
            encode_png(img)
        c4 = time.process_time()
        for k, dt in zip(t, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True):
            t[k] += dt / reps
    floor = t["encode"]
    total = sum(t.values())
    for k, v in t.items():
        print(f"{k:>9}: {v * 1000:7.1f} ms/sample")
    print(f"    total: {total * 1000:7.1f} ms/sample -> {1 / total:.2f} samples/s/core")
    print(f"    floor: {floor * 1000:7.1f} ms/sample (encoding alone) -> {1 / floor:.2f} samples/s/core")
    print(f"total/floor: {total / floor:.2f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=50000, help="total faces of the pair")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    run(args.faces, args.reps)


if __name__ == "__main__":
    main()
