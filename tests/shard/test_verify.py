import csv
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.hashing import sha256_file
from core.release_schema import RELEASE_SCHEMA, SPLIT_DIRS, SPLITS
from shard.release import SHARD_OPTIONS, SHARDS_CSV_HEADER, write_release
from shard.verify import verify_release
from tests.shard import fakes


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    out = tmp_path_factory.mktemp("rel") / "out"
    write_release(out_dir=out, shard_bytes=30_000, row_group_rows=4, **fakes.build_inputs(work, n_per_species=20))
    return out


@pytest.fixture
def release(pristine, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(pristine, out)
    return out


def shard_rows(out):
    with open(out / "shards.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def rewrite_csv(out, rows):
    with open(out / "shards.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, SHARDS_CSV_HEADER, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@pytest.mark.slow  # deep verify on worker processes
def test_a_good_release_verifies_shallow_and_deep(release):
    r = verify_release(release)
    assert r.ok, r.text()
    assert r.shards_checked == len(shard_rows(release))
    assert r.bytes_hashed == sum(int(x["size"]) for x in shard_rows(release))
    assert r.seconds > 0 and "MB/s" in r.text() and "OK" in r.text()
    d = verify_release(release, deep=True, scheduler="processes", workers=2)
    assert d.ok, d.text()
    assert d.deep_cpu_seconds > 0 and "rows per CPU second" in d.text()
    assert d.rows_checked == 40 + pq.read_metadata(release / "demo.parquet").num_rows
    t = verify_release(release, deep=True, scheduler="threads", workers=2)  # the decoders are per thread
    assert t.ok and t.rows_checked == d.rows_checked, t.text()


def test_flipped_byte_is_caught(release):
    path = release / shard_rows(release)[0]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    r = verify_release(release)
    assert not r.ok
    assert any(shard_rows(release)[0]["path"] in p and "altered" in p for p in r.problems), r.text()


def test_deleted_shard_is_caught(release):
    rel = shard_rows(release)[1]["path"]
    (release / rel).unlink()
    r = verify_release(release)
    assert any(rel in p and "missing" in p for p in r.problems), r.text()


def test_extra_shard_is_caught(release):
    src = release / shard_rows(release)[0]["path"]
    extra = release / "train" / "train-09999.parquet"
    shutil.copy(src, extra)
    r = verify_release(release)
    assert any("train/train-09999.parquet" in p and "not listed" in p for p in r.problems), r.text()


@pytest.mark.parametrize("split", SPLITS)
def test_unlisted_and_missing_shards_are_caught_in_every_split_folder(release, split):
    rows = [r for r in shard_rows(release) if r["split"] == split]
    assert rows, f"the fake release must have {split} shards"
    gone = rows[0]["path"]
    folder = SPLIT_DIRS[split]
    extra = f"{folder}/{folder}-09999.parquet"
    shutil.copy(release / gone, release / extra)
    (release / gone).unlink()
    r = verify_release(release)
    assert any(gone in p and "shard missing" in p for p in r.problems), r.text()
    assert any(extra in p and "not listed" in p for p in r.problems), r.text()
    others = [p for p in r.problems if gone not in p and extra not in p]
    assert not others, others


def test_deep_verify_catches_overlapping_em_masks(release):
    """EM masks are slices of exclusive labels: a pixel in both A and B is a problem deep verify names."""
    import pyarrow as pa

    from tests.shard.fakes import png_bytes

    rows = shard_rows(release)
    entry = next(r for r in rows if r["split"] == "train")
    path = release / entry["path"]
    data = pq.read_table(path).to_pylist()
    img = np.zeros((224, 224, 3), np.uint8)
    img[10:20, 10:20, 1:] = 255
    data[0]["em_xz_before"] = {"bytes": png_bytes(img), "path": None}
    pq.write_table(pa.Table.from_pylist(data, schema=RELEASE_SCHEMA), path, row_group_size=4, **SHARD_OPTIONS)
    entry["sha256"], entry["size"] = sha256_file(path), path.stat().st_size
    rewrite_csv(release, rows)
    deep = verify_release(release, deep=True, scheduler="sync")
    assert any(data[0]["combined_sample_hash"] in p and "em_xz_before segment masks A and B overlap" in p
               for p in deep.problems), deep.text()  # fmt: skip


def test_truncated_shard_is_caught(release):
    rel = shard_rows(release)[-1]["path"]
    path = release / rel
    path.write_bytes(path.read_bytes()[:-100])
    r = verify_release(release)
    assert any(rel in p and "truncated" in p for p in r.problems), r.text()


def test_missing_shards_csv_is_caught(release):
    (release / "shards.csv").unlink()
    assert "shards.csv is missing" in verify_release(release).problems


def test_deep_verify_catches_a_bad_label(release):
    """A shard rewritten with a wrong label and a matching shards.csv: only deep verify sees it."""
    rows = shard_rows(release)
    entry = next(r for r in rows if r["split"] == "train")
    path = release / entry["path"]
    t = pq.read_table(path)
    data = t.to_pylist()
    victim = next(r for r in data if r["false_split_correction_label"] is not None)
    victim["false_split_correction_label"] = 1.0 - victim["false_split_correction_label"]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(data, schema=RELEASE_SCHEMA), path, row_group_size=4, **SHARD_OPTIONS)
    entry["sha256"], entry["size"] = sha256_file(path), path.stat().st_size
    rewrite_csv(release, rows)
    assert verify_release(release).ok
    deep = verify_release(release, deep=True, scheduler="sync")
    assert not deep.ok
    assert any(victim["combined_sample_hash"] in p and "false_split_correction_label" in p for p in deep.problems)
    # the sidecar still carries the old label: the disagreement is reported too
    assert any("metadata/train.parquet" in p and "disagrees" in p for p in deep.problems), deep.text()


def test_deep_verify_catches_wrong_split_folder(release):
    rows = shard_rows(release)
    entry = next(r for r in rows if r["split"] == "test")
    path = release / entry["path"]
    t = pq.read_table(path)
    data = t.to_pylist()
    data[0]["split"] = "train"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(data, schema=RELEASE_SCHEMA), path, row_group_size=4, **SHARD_OPTIONS)
    entry["sha256"], entry["size"] = sha256_file(path), path.stat().st_size
    rewrite_csv(release, rows)
    deep = verify_release(release, deep=True, scheduler="sync")
    assert any(data[0]["combined_sample_hash"] in p and "expected 'test'" in p for p in deep.problems), deep.text()
