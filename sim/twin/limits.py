"""The real servers' limits the twin enforces, on by default, at values that bite at demo scale.

Which values are the real ones and which are scaled (see the package docstring for the sources):

- materialization row cap: 50 rows (SCALED; real: 200,000, MaterializationEngine config.py
  QUERY_LIMIT_SIZE) so that the demo's tables of hundreds of rows hit it;
- URL length: 8,192 bytes, else 414 (REAL order of magnitude: a front server's request-line limit,
  not in the services' own code);
- roots per change-log request: 50, else 504 (SCALED stand-in: the real server has no explicit bound,
  it builds every root's lineage in one request and times out for ~10^5 roots);
- latency per request: 0 ms unless asked (real: tens of ms from a cluster to the cloud).

These are known to the client's tests by design. The hostile twin (hostile.py, `--hostile SEED`) instead hides
limits drawn per run (v1's real uWSGI header buffer, v2's URL limit, roots per change log, ids per level-2
batch) behind faults and heavy-tailed latency, so that the client must find them.
"""

from __future__ import annotations

from dataclasses import dataclass

REAL_ROW_CAP = 200_000


@dataclass(frozen=True)
class TwinLimits:
    row_cap: int = 50
    url_bytes: int = 8192
    change_log_roots: int = 50
    latency_ms: float = 0.0

    def describe(self) -> str:
        return (
            f"row cap {self.row_cap} rows, URL <= {self.url_bytes} bytes, "
            f"<= {self.change_log_roots} roots per change-log request, latency {self.latency_ms:g} ms"
        )
