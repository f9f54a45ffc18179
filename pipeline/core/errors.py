"""Error types. A UserError is printed as one line by the CLI (no traceback)."""


class UserError(Exception):
    """A mistake or condition the user can fix: bad config, unreachable server, missing input."""


class TransientSourceError(Exception):
    """A source error worth retrying (timeout, connection reset, HTTP 5xx)."""


class SampleError(Exception):
    """A sample that cannot be built; recorded in the failures ledger with `reason`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
