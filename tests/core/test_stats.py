"""What work met, merged without knowing what it counts (core/stats.py): the runner's merge of every unit's stats."""

from __future__ import annotations

from core.stats import merge_stats


def test_numbers_are_summed_lists_joined_and_dicts_merged_key_by_key():
    a = {"requests": {"refused": 1, "slow": 0, "sizes": {"change_log": [50]}}, "seconds": 1.5}
    b = {"requests": {"refused": 2, "timeouts": 3, "sizes": {"change_log": [25], "l2cache": [100]}}, "seconds": 0.5}
    assert merge_stats(a, b) == {
        "requests": {"refused": 3, "slow": 0, "timeouts": 3, "sizes": {"change_log": [50, 25], "l2cache": [100]}},
        "seconds": 2.0,
    }


def test_neither_side_is_changed_and_an_empty_side_gives_the_other():
    a = {"requests": {"sizes": {"x": [1]}}}
    b = {"requests": {"sizes": {"x": [2]}}}
    merged = merge_stats(a, b)
    merged["requests"]["sizes"]["x"].append(9)
    assert a == {"requests": {"sizes": {"x": [1]}}} and b == {"requests": {"sizes": {"x": [2]}}}
    assert merge_stats({}, b) == b and merge_stats(a, {}) == a
    assert merge_stats({}, b)["requests"]["sizes"]["x"] is not b["requests"]["sizes"]["x"]


def test_a_flag_or_a_text_is_not_added_the_later_one_is_kept():
    assert merge_stats({"ok": True, "host": "a"}, {"ok": True, "host": "b"}) == {"ok": True, "host": "b"}
