"""Which roots touch a base root in a label volume: the rule behind adjacent controls (contract: a root
6-connected to the edited root), shared by the bank and the demo world that plants them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def adjacent_roots(labels: np.ndarray, base_roots: list[int], exclude: set[int]) -> list[tuple[int, int, int]]:
    """(base, adjacent, contact voxels) for roots 6-connected to a base root, largest contact first."""
    structure = ndimage.generate_binary_structure(3, 1)
    found: dict[int, tuple[int, int]] = {}
    for base in base_roots:
        mask = labels == base
        if not mask.any():
            continue
        shell = ndimage.binary_dilation(mask, structure) & ~mask
        ids, counts = np.unique(labels[shell], return_counts=True)
        for root, count in zip(ids.tolist(), counts.tolist(), strict=True):
            if root == 0 or root in exclude:
                continue
            if root not in found or count > found[root][1]:
                found[root] = (base, count)
    return sorted(((b, r, c) for r, (b, c) in found.items()), key=lambda t: (-t[2], t[1]))
