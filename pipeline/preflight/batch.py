"""The largest batch a server accepts, found by doubling then bisecting in a few requests.

`largest_batch(accepts, start, ceiling, max_requests)` knows nothing of HTTP: `accepts(n)` asks the server
for a batch of n items and says whether it was answered (False for a refusal: 413 / 414 / 431 / 502 / 503 /
504, a timeout or a reset; preflight asks a refused size once more, so a transient 502 is not taken for a
limit). Preflight uses it for operation details (ids in the URL); the adaptive
request layer can start from its `largest_ok` (written to the preflight report) instead of a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProbe:
    largest_ok: int  # the largest size answered (0: even the smallest tried was refused)
    smallest_refused: int | None  # the smallest size refused; None: nothing up to the ceiling was
    asked: int  # sizes asked (accepts() may send a refused size twice)
    trail: tuple[tuple[int, bool], ...]  # (size, accepted) in the order asked

    def text(self) -> str:
        if self.smallest_refused is None:
            return f"{self.largest_ok} accepted (nothing refused up to it; {self.asked} sizes asked)"
        asked = ", ".join(f"{n}{'+' if ok else '-'}" for n, ok in self.trail)
        return f"{self.largest_ok} accepted, {self.smallest_refused} refused ({self.asked} sizes asked: {asked})"


def largest_batch(accepts: Callable[[int], bool], start: int, ceiling: int, max_requests: int = 8) -> BatchProbe:
    """Ask `start`; double while accepted (up to `ceiling`), halve while refused; then bisect between the
    largest accepted and the smallest refused until they meet or `max_requests` are spent."""
    trail: list[tuple[int, bool]] = []
    ok, refused = 0, None
    n = max(1, min(start, ceiling))
    while len(trail) < max_requests:
        accepted = accepts(n)
        trail.append((n, accepted))
        if accepted:
            ok = max(ok, n)
        else:
            refused = n if refused is None else min(refused, n)
        if refused is None:
            if n >= ceiling:
                break
            n = min(ceiling, 2 * n)
        elif ok == 0:
            if n == 1:
                break
            n = max(1, n // 2)
        else:
            if refused - ok <= 1:
                break
            n = (ok + refused) // 2
    return BatchProbe(ok, refused, len(trail), tuple(trail))
