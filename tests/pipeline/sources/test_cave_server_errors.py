"""The servers' errors as their code makes them, met through the real caveclient and cloud-volume: the
materialization engine's 500 wrapping a 429, 404 or 410 (its errorhandler(Exception)), middle_auth_client's 302
to a login page, PyChunkedGraph's 500 for one item. Each is read for what it means."""

from __future__ import annotations

import json

import pytest

from core.errors import PartlyUnavailable, Unavailable, UserError
from pipeline.sources import budget as budgets
from pipeline.sources.cave import CaveSource
from sim.twin import TOKEN, Fault


def _wrapped(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


@pytest.fixture(autouse=True)
def fresh_budget():
    yield budgets.reset_local()
    budgets.reset_local()


def test_a_rate_limit_wrapped_in_a_500_is_waited_out_and_paces_the_query_endpoint(make_cfg, cave_twin):
    src = CaveSource(make_cfg(), token=TOKEN)
    expected = src.proofread_roots()
    src = CaveSource(make_cfg(), token=TOKEN)
    cave_twin.app.faults.add(Fault(r"/query$", status=500, body=_wrapped("429 Too Many Requests: 5 per 1 second"),
                                   times=1))  # fmt: skip
    assert src.proofread_roots() == expected
    host = budgets.host_of(cave_twin.url)
    stats = budgets.current().stats()[host]
    assert stats["rate_limits"] == {"materialization_query": "429 Too Many Requests: 5 per 1 second"}
    assert stats["per_minute"]["materialization_query"] < 5 * 60


def test_a_missing_table_wrapped_in_a_500_is_named_in_one_line(make_cfg, cave_twin):
    cave_twin.app.faults.add(Fault(r"/table/no_such_table/query$", status=500,
                                   body=_wrapped("404 Not Found: Table no_such_table not found")))  # fmt: skip
    src = CaveSource(make_cfg(synapse_table="no_such_table"), token=TOKEN)
    with pytest.raises(UserError, match=r"synapse_table 'no_such_table' is not a table of datastack .* tables there"):
        src.synapses([1], [2])


def test_an_expired_version_wrapped_in_a_500_is_named_in_one_line(make_cfg, cave_twin):
    cave_twin.app.faults.add(Fault(r"/query$", status=500, body=_wrapped("410 Gone: version 3 has expired")))
    with pytest.raises(UserError, match=r"410 Gone: version 3 has expired.*no longer served"):
        CaveSource(make_cfg(), token=TOKEN).proofread_roots()


def test_a_redirect_to_a_login_page_is_the_token_error(make_cfg, cave_twin):
    """middle_auth_client answers a request without a valid token with a 302; followed, caveclient would read the
    login page's HTML as JSON (a JSONDecodeError escaping every handler)."""
    login = f"{cave_twin.url}/sticky_auth/api/v1/authorize?redirect=x"
    page = Fault(r"^/sticky_auth/", status=200, body=b"<html>Sign in</html>", content_type="text/html")
    cave_twin.app.faults.add(page)
    redirect = Fault(r"^/(info|segmentation|materialize|l2cache)/", status=302, body=b"<html>Redirecting</html>",
                     content_type="text/html", headers={"Location": login})  # fmt: skip
    cave_twin.app.faults.add(redirect)
    # at first contact (the client's constructor: its requests run before any hook of ours)
    with pytest.raises(UserError, match=r"(redirected to|not JSON, most likely) a login page.* token is missing or not "
                                        "valid") as err:  # fmt: skip
        CaveSource(make_cfg(), token=TOKEN).proofread_roots()
    assert TOKEN not in str(err.value)
    # once the clients are open: the redirect itself is the token error
    cave_twin.app.faults.clear()
    src = CaveSource(make_cfg(), token=TOKEN)
    src.proofread_roots()
    cave_twin.app.faults.add(page, redirect)
    with pytest.raises(UserError, match=r"redirected to a login page.* token is missing or not valid") as err:
        src.change_log([1])
    assert TOKEN not in str(err.value)


def test_a_root_whose_change_log_always_fails_is_named_and_the_others_answered(make_cfg, cave_twin):
    """pcgv1 fails every tabular_change_log_many batch holding a root with undo rows (edges_failsafe KeyError):
    bisected down to that root, the other roots' logs come back and the root is unavailable."""
    src = CaveSource(make_cfg(), token=TOKEN)
    roots = src.proofread_roots()
    bad = roots[len(roots) // 2]
    original = cave_twin.app.world.change_log

    def change_log(root, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - the model's signature
        if int(root) == bad:
            raise RuntimeError("KeyError: 'added_edges' (undo row without edges)")
        return original(root, *args, **kwargs)

    cave_twin.app.world.change_log = change_log
    try:
        with pytest.raises(PartlyUnavailable) as partly:
            src.change_log(roots)
    finally:
        cave_twin.app.world.change_log = original
    assert set(partly.value.unavailable) == {bad}
    gone = partly.value.unavailable[bad]
    assert isinstance(gone, Unavailable) and gone.reason == "change_log_unavailable" and "HTTP 500" in str(gone)
    answered = set(partly.value.result.column("root_id").to_pylist())
    assert bad not in answered and answered == set(src.change_log([r for r in roots if r != bad]).column("root_id")
                                                   .to_pylist())  # fmt: skip
