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


UNAVAILABLE = "_unavailable"  # the suffix of an item's reason when a server could not give it (Unavailable)
UNEXPECTED = "unexpected_"  # the prefix of a failure on an exception that is no reason of the sample (a bug, a library)


class Unavailable(SampleError):
    """What an item touches could not be had from a server: its requests kept failing after bounded resends while
    the host answered others (or the host stayed down past its outage deadline). Ledgered as
    `<endpoint>_unavailable` on the item's samples; not an absence of data: the next build retries it once."""

    def __init__(self, endpoint: str, detail: str = "") -> None:
        super().__init__(f"{endpoint}{UNAVAILABLE}", detail)
        self.endpoint = endpoint


class PartlyUnavailable(Exception):
    """A call over many items whose answer lacks some: `result` is what the call returns for the items that were
    answered, `unavailable` maps each other item to its Unavailable."""

    def __init__(self, result: object, unavailable: dict) -> None:
        first = next(iter(unavailable.values()), None)
        super().__init__(f"{len(unavailable)} items unavailable" + (f", e.g. {first}" if first else ""))
        self.result = result
        self.unavailable = unavailable


def is_retryable(reason: str) -> bool:
    """A failure the next build tries again (once): a server could not give it, or an unexpected exception stopped
    it. Every other reason is the data's (a missing mesh, an op without points) and is kept until its inputs change."""
    return reason.endswith(UNAVAILABLE) or reason.startswith(UNEXPECTED)
