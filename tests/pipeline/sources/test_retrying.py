import pytest

from config.schema import Faults
from core.errors import SampleError, TransientSourceError
from pipeline.sources.retrying import RetryingSource, with_retries


class Flaky:
    species = "demo"

    def __init__(self, fail_times):
        self.fail_times = fail_times
        self.calls = 0

    def value(self, x):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise TransientSourceError("503 from server")
        return x * 2

    def broken(self):
        raise ValueError("permanent")


def test_retries_transient_then_succeeds():
    sleeps = []
    flaky = Flaky(2)
    assert with_retries(lambda: flaky.value(3), sleep=sleeps.append) == 6
    assert sleeps == [0.2, 0.4]


def test_gives_up_after_attempts():
    flaky = Flaky(10)
    with pytest.raises(TransientSourceError):
        with_retries(lambda: flaky.value(1), attempts=3, sleep=lambda s: None)
    assert flaky.calls == 3


def test_permanent_errors_are_not_retried():
    session = RetryingSource(Flaky(0), base_delay_s=0)
    with pytest.raises(ValueError):
        session.broken()


def test_injected_transient_faults_are_retried_away():
    inner = Flaky(0)
    session = RetryingSource(inner, Faults(transient_rate=0.5), attempts=20, base_delay_s=0)
    assert [session.value(i) for i in range(20)] == [2 * i for i in range(20)]
    assert inner.calls == 20  # injected faults never reach the inner source
    assert 5 <= session.transient_errors <= 40


def test_injected_permanent_fault_only_for_chosen_sample():
    session = RetryingSource(Flaky(0), Faults(permanent_samples=["abc"]), base_delay_s=0)
    with session.sample("abc"), pytest.raises(SampleError, match="injected_permanent_fault"):
        session.value(1)
    with session.sample("def"):
        assert session.value(1) == 2
    assert session.species == "demo"


def test_injected_transient_faults_never_exhaust_retries_and_do_not_depend_on_history():
    def draws(prior_calls):
        inner = Flaky(0)
        session = RetryingSource(inner, Faults(transient_rate=0.9), attempts=3, base_delay_s=0)
        for i in range(prior_calls):  # another sample's calls, earlier in the same worker
            with session.sample(f"other-{i}"):
                session.value(i)
        before = session.transient_errors
        with session.sample("s"):
            values = [session.value(i) for i in range(10)]
        return values, session.transient_errors - before

    values, errors = draws(0)
    assert values == [2 * i for i in range(10)] and errors > 0
    assert draws(7) == (values, errors)


def test_a_transient_error_that_outlasts_its_retries_is_the_items_unavailable_reason():
    """A chunk read that keeps failing after the wrapper's retries is the sample's `em_unavailable` (ledgered,
    retried by the next build), never a TransientSourceError that would stop the partition."""
    from core.errors import Unavailable

    class Source:
        species = "demo"

        def em_cutout(self, center_nm, size_nm):  # noqa: ANN001, ANN201
            raise TransientSourceError("EM cutout: HTTP 503 from bucket")

    wrapped = RetryingSource(Source(), attempts=3, base_delay_s=0.0)
    with pytest.raises(Unavailable) as gone:
        wrapped.em_cutout((0, 0, 0), 10.0)
    assert gone.value.reason == "em_unavailable" and "HTTP 503" in str(gone.value)
