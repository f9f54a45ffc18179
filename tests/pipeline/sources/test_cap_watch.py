"""CapWatch under concurrent queries: one thread's `limit=1` probe never makes another's answer look capped."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from pipeline.sources.cave.tables import CapWatch


class _Req:
    def __init__(self, body: dict) -> None:
        self.body = json.dumps(body).encode()


class _Resp:
    def __init__(self, warning: str, body: dict) -> None:
        self.headers = {"Warning": warning} if warning else {}
        self.request = _Req(body)


def test_a_limit_probe_on_another_thread_does_not_cap_a_one_row_answer():
    """Thread A's column probe (limit=1, answered with the engine's Warning for 1 row) lands between thread B's
    reset and its check; B's one-row answer had no Warning and is whole."""
    watch = CapWatch()
    probe_done, b_checked = threading.Event(), threading.Event()

    def probe() -> None:
        watch.reset()
        watch.hook(_Resp('201 - "Limited query to 1 rows', {"limit": 1}))
        probe_done.set()
        assert b_checked.wait(30)

    def query() -> bool:
        watch.reset()
        assert probe_done.wait(30)
        watch.hook(_Resp("", {"filter_in_dict": {"synapses": {"pre_pt_root_id": [5]}}}))
        capped = watch.capped(1)
        b_checked.set()
        return capped

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(probe)
        b = pool.submit(query)
        assert b.result(timeout=60) is False
        a.result(timeout=60)
    assert watch.cap is None  # the probe taught nothing


def test_the_cap_is_learned_from_a_real_cap_and_flagged_only_on_its_thread():
    watch = CapWatch()
    flagged, other = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def capped_thread() -> None:
        watch.reset()
        watch.hook(_Resp('201 - "Limited query to 50 rows', {}))
        flagged.set()
        assert other.wait(30)
        seen["capped"] = watch.capped(50)

    def other_thread() -> None:
        assert flagged.wait(30)
        watch.reset()
        watch.hook(_Resp("", {}))
        seen["other_3"] = watch.capped(3)
        seen["other_50"] = watch.capped(50)  # exactly the server's cap: taken as capped (no header needed)
        other.set()

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(capped_thread), pool.submit(other_thread)]:
            f.result(timeout=60)
    assert seen == {"capped": True, "other_3": False, "other_50": True}
    assert watch.cap == 50


def test_a_limit_smaller_than_the_server_cap_is_the_server_cap():
    """A query asking limit=1000 that the engine cut at 50 was capped by the server, not by itself."""
    watch = CapWatch()
    watch.reset()
    watch.hook(_Resp('201 - "Limited query to 50 rows', {"limit": 1000}))
    assert watch.capped(50) and watch.cap == 50
