"""Partitions (pipeline/partitions.py): buckets of a hash prefix, so rows never change partition when others come."""

from __future__ import annotations

from core.hashing import md5_hex
from pipeline.partitions import PREFIX_BITS, bucket_of, bucket_range, buckets, level_for, ranges_overlap, root_digest


def _hashes(n, tag="h"):
    return sorted(md5_hex(f"{tag}{i}") for i in range(n))


def test_level_is_the_smallest_with_buckets_under_the_target():
    assert [level_for(n, 64) for n in (0, 64, 65, 128, 129, 1000)] == [0, 0, 1, 1, 2, 4]
    assert level_for(10**12, 1) == 20  # capped


def test_buckets_cover_every_row_once_in_order():
    hashes = _hashes(500)
    for level in (0, 1, 3):
        cuts = buckets(hashes, level)
        assert len(cuts) == 2**level and cuts[0][0] == 0 and cuts[-1][1] == len(hashes)
        assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:], strict=False))
        for index, (start, stop) in enumerate(cuts):
            assert all(bucket_of(h, level) == index for h in hashes[start:stop])


def test_adding_rows_moves_no_row_to_another_bucket():
    old = _hashes(300)
    new = sorted(old + _hashes(15, tag="new"))  # +5%
    level = level_for(len(new), 64)
    assert level == level_for(len(old), 64)
    before = {h: i for i, (s, e) in enumerate(buckets(old, level)) for h in old[s:e]}
    after = {h: i for i, (s, e) in enumerate(buckets(new, level)) for h in new[s:e]}
    assert all(after[h] == before[h] for h in old)


def test_a_bucket_splits_into_whole_buckets_of_the_next_level():
    lo, hi = bucket_range(1, 1)
    assert (lo, hi) == (1 << (PREFIX_BITS - 1), 1 << PREFIX_BITS)
    assert bucket_range(2, 2)[0] == lo and bucket_range(3, 2)[1] == hi
    assert ranges_overlap(bucket_range(1, 1), bucket_range(2, 2))
    assert not ranges_overlap(bucket_range(0, 1), bucket_range(2, 2))
    assert bucket_of("ffffffff" + "0" * 24, 3) == 7 and bucket_of("0" * 32, 3) == 0


def test_root_digest_recipe():
    assert root_digest(42) == md5_hex("root:42") == "4ced0b60e38e41fd91fe3f160a5f3dd0"
