"""The source as stages see it: transient errors retried with backoff, faults injected on request.

A transient error that outlasts its retries is the call's item's: `Unavailable("<endpoint>_unavailable")`, a reason
the stage ledgers on what the call was for (the sample, the root's candidates), never a crash of its partition. The
batched CAVE requests have resent and bisected already (adaptive.py) and raise Unavailable themselves.

Fault injection (config `faults`) is for drills and tests: transient errors at a rate (retried,
so they must not change the release) and permanent ones for chosen samples (they must end in
the failures ledger). Draws are hashed from the call, never random, so a drill is repeatable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from config.schema import Faults
from core.errors import SampleError, TransientSourceError, Unavailable
from core.hashing import unit_interval

T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`; on TransientSourceError wait base * 2**k (capped) and try again, up to `attempts` times.

    Any other exception is permanent and propagates at once, and so does a transient one marked `final`: its
    request was already resent as often as it may be (pipeline/sources/adaptive.py), a retry would resend it.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except TransientSourceError as exc:
            if attempt == attempts - 1 or getattr(exc, "final", False):
                raise
            sleep(min(max_delay_s, base_delay_s * 2**attempt))
    raise AssertionError("unreachable")


_NOT_WRAPPED = frozenset({"species"})
# the endpoint a Source method reads, in the reason of an item it could not have (`<endpoint>_unavailable`)
ENDPOINT_OF = {
    "proofread_roots": "proofread_roots", "change_log": "change_log", "operation_details": "operation_details",
    "roots_at": "roots", "synapses": "synapses", "skeleton": "level2_graph", "mesh": "mesh", "em_cutout": "em",
    "segmentation_cutout": "segmentation", "canonical_bbox_nm": "segmentation_info",
    "base_resolution_nm": "segmentation_info", "as_of": "materialization",
}  # fmt: skip


class RetryingSource:
    def __init__(self, inner: Any, faults: Faults | None = None, attempts: int = 5, base_delay_s: float = 0.2):
        self.inner = inner
        self.faults = faults or Faults()
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self._local = threading.local()  # the sample a thread works on, and its call count
        self._lock = threading.Lock()
        self.transient_errors = 0  # seen (injected or real) and retried
        self.species = inner.species

    @property
    def _sample(self) -> str | None:
        return getattr(self._local, "sample", None)

    @_sample.setter
    def _sample(self, value: str | None) -> None:
        self._local.sample = value

    @property
    def _calls(self) -> int:
        return getattr(self._local, "calls", 0)

    @_calls.setter
    def _calls(self, value: int) -> None:
        self._local.calls = value

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_local", "_lock")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local, self._lock = threading.local(), threading.Lock()

    @contextlib.contextmanager
    def sample(self, sample_hash: str) -> Iterator[None]:
        """Calls made inside belong to this sample (for permanent injected faults, and so that the
        injected transient ones depend on the sample and its own call order, not on which worker
        process ran which samples before)."""
        previous, self._sample = (self._sample, self._calls), sample_hash
        self._calls = 0
        try:
            yield
        finally:
            self._sample, self._calls = previous

    def _inject(self, name: str, key: str, attempt: int) -> None:
        if self._sample is not None and self._sample in self.faults.permanent_samples:
            raise SampleError("injected_permanent_fault", f"{name} for sample {self._sample}")
        rate = self.faults.transient_rate
        # injected transient faults stay within the retry budget: a drill shows them retried away
        if rate and attempt < self.attempts - 1 and unit_interval("fault", name, key, attempt) < rate:
            raise TransientSourceError(f"injected transient fault in {name} (attempt {attempt + 1})")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("inner", "_local", "_lock"):
            raise AttributeError(name)
        target = getattr(self.inner, name)
        if name in _NOT_WRAPPED or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls += 1
            key = f"{self._sample}|{self._calls}"
            attempt = 0

            def once() -> Any:
                nonlocal attempt
                try:
                    self._inject(name, key, attempt)
                    return target(*args, **kwargs)
                except TransientSourceError:
                    with self._lock:
                        self.transient_errors += 1
                    raise
                finally:
                    attempt += 1

            try:
                return with_retries(once, attempts=self.attempts, base_delay_s=self.base_delay_s)
            except TransientSourceError as exc:
                raise Unavailable(ENDPOINT_OF.get(name, name), f"{exc} (after {self.attempts} tries)") from exc

        return call
