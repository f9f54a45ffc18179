"""What work met, merged without knowing what it counts: the runner adds up the stats each unit of work reports
(the sources' request counters among them) as plain data, so that it imports no source to do it."""

from __future__ import annotations


def merge_stats(a: dict, b: dict) -> dict:
    """Two stats as one: numbers summed, lists joined (in order: `a`'s first), dicts merged the same way, key by
    key; any other value is `b`'s when it has one. Neither argument is changed."""
    out = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        if key not in out:
            out[key] = _copy(value)
        elif isinstance(mine, dict) and isinstance(value, dict):
            out[key] = merge_stats(mine, value)
        elif isinstance(mine, list) and isinstance(value, list):
            out[key] = [*mine, *value]
        elif _number(mine) and _number(value):
            out[key] = mine + value
        else:
            out[key] = _copy(value)
    return out


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _copy(value: object) -> object:
    if isinstance(value, dict):
        return merge_stats({}, value)
    return list(value) if isinstance(value, list) else value
