"""The demo world's volume: its voxel size, chunk size, voxel offset and extent.

They are facts of the data the demo source reads (the world on disk, its level-2 chunks), so they are defined
here, with the source; the simulator that writes the world (sim/demo_world) imports them.
"""

from __future__ import annotations

import numpy as np

RES = np.array([32.0, 32.0, 45.0])  # nm per voxel
CHUNK = np.array([64, 64, 40])  # voxels per chunk (the precomputed volumes' and the level-2 chunks')
VOXEL_OFFSET = np.array([640, 512, 120])
VOLUME_SIZE = np.array([11264, 8128, 4000])  # 360.4 x 260.1 x 180.0 um
