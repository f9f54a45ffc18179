import io

import numpy as np
import pytest
from PIL import Image

from shard.release import write_release
from tests.shard import fakes

datasets = pytest.importorskip("datasets")


def test_load_dataset_gives_three_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    out = tmp_path / "release"
    summary = write_release(
        out_dir=out, shard_bytes=30_000, row_group_rows=4, **fakes.build_inputs(tmp_path / "work", n_per_species=20)
    )
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache"))
    assert set(ds) == {"train", "validation", "test"}
    for split in ("train", "validation", "test"):
        assert ds[split].num_rows == summary["rows"][split]
        assert set(ds[split]["split"]) == {split}
    row = ds["train"][0]
    assert isinstance(row["em_xy_before"], Image.Image) and row["em_xy_before"].size == (224, 224)
    geom = np.load(io.BytesIO(row["geometry"]))["arr_0"]
    assert geom.shape == (3, 7, 224, 224) and geom.dtype == np.float16
    masked = next(r for r in ds["train"] if r["has_after_mask"])
    assert isinstance(masked["split_mask_front"], Image.Image)
    assert set(np.unique(np.asarray(masked["split_mask_front"]))) <= {0, 128, 255}
    plain = next(r for r in ds["train"] if not r["has_after_mask"])
    assert plain["split_mask_front"] is None
