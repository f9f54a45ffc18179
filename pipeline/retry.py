"""Retries with exponential backoff, for transient source errors only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pipeline.core.errors import TransientSourceError

T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`; on TransientSourceError wait base * 2**k (capped) and try again, up to `attempts` times.

    Any other exception is permanent and propagates at once.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except TransientSourceError:
            if attempt == attempts - 1:
                raise
            sleep(min(max_delay_s, base_delay_s * 2**attempt))
    raise AssertionError("unreachable")
