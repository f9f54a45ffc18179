import numpy as np

from render.encode import encode_png
from shard.compare import pixel_agreement, silhouette_iou


def test_pixel_agreement_counts_equal_pixels():
    a = np.zeros((224, 224), np.uint8)
    b = a.copy()
    b[:10, :10] = 255
    cell = lambda arr: {"bytes": encode_png(arr)}  # noqa: E731
    assert pixel_agreement(cell(a), cell(a)) == 1.0
    assert pixel_agreement(cell(a), cell(b)) == 1 - 100 / 224**2
    assert pixel_agreement(cell(a), None) == 0.0


def test_silhouette_iou_per_view():
    a = np.zeros((3, 7, 4, 4), np.float16)
    b = a.copy()
    a[0, 0, :2] = 1
    b[0, 0, :1] = 1
    assert silhouette_iou(a, b).tolist() == [0.5, 1.0, 1.0]  # empty views agree
