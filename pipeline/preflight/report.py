"""Preflight's findings: one `Check` per assumption, printed one line each, written as JSON.

A check is `ok`, `warn` (the build runs, but not as the config expects), `FAIL` (the build would fail or
be wrong: `action` names the config key to change or what to do) or `skip` (not checked because a check it
needs failed; the failed one is named). Only FAILs make the exit code non-zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    found: str
    action: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.found}"
        return text + (f" -> {self.action}" if self.action else "")


@dataclass
class Report:
    species: str
    checks: list[Check] = field(default_factory=list)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # per endpoint class (not compared)
    requests: int = 0
    limits: dict[str, object] = field(default_factory=dict)  # what was found, for the adaptive source
    tracebacks: dict[str, str] = field(default_factory=dict)  # check -> traceback of an unexpected exception

    @property
    def ok(self) -> bool:
        return not self.failed()

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def lines(self) -> list[str]:
        out = [c.line() for c in self.checks]
        for name, fig in self.latency.items():
            out.append(
                f"     latency {name}: {fig['requests']} requests, p50 {fig['p50_ms']:g} ms, "
                f"p90 {fig['p90_ms']:g} ms, max {fig['max_ms']:g} ms"
            )
        counts = {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, SKIP, FAIL)}
        out.append(
            f"preflight of {self.species}: {counts[OK]} ok, {counts[WARN]} warn, {counts[SKIP]} skipped, "
            f"{counts[FAIL]} FAIL; {self.requests} requests"
        )
        return out

    def to_json(self) -> dict:
        return {
            "species": self.species,
            "ok": self.ok,
            "requests": self.requests,
            "checks": [asdict(c) for c in self.checks],
            "limits": self.limits,
            "latency": self.latency,
            "tracebacks": self.tracebacks,
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    def comparable(self, origins: dict[str, str] | None = None) -> dict:
        """What must be the same between a run and its replay: the checks, the request count and the limits
        found (latencies differ); `origins` maps the replay's URLs back to the recorded ones."""
        text = json.dumps({k: v for k, v in self.to_json().items() if k != "latency"}, sort_keys=True)
        for new, old in (origins or {}).items():
            text = text.replace(new, old)
        return json.loads(text)
