"""`python -m pipeline preflight --species S [--record DIR]`: the cheap first contact with a species' servers.

Every assumption a build makes about them, checked in a few minutes and at most a few hundred requests
(checks.py), printed one line per check and written as JSON (`WORK/<species>/preflight.json`); the exit
code is non-zero when a check FAILed. With `--record DIR` every request and answer is written to DIR
(transport.py; never the token or cookies) so that `python -m pipeline twin --replay DIR` can serve it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError
from pipeline.context import BuildContext
from pipeline.preflight.checks import REQUEST_BOUND, Preflight
from pipeline.preflight.report import FAIL, OK, Check, Report
from pipeline.sources.transport import Recorder

__all__ = ["REQUEST_BOUND", "Report", "report_path", "run_preflight"]


def report_path(ctx: BuildContext) -> Path:
    """Where the report goes; the adaptive source can read its `limits` (the batch sizes found) from here."""
    return ctx.species_dir / "preflight.json"


def run_preflight(
    ctx: BuildContext,
    record: Path | None = None,
    workers: int = 32,
    now: float | None = None,
    echo: Callable[[str], None] = print,
) -> Report:
    """Run every check against the species' servers (a `source: cave` config); the report is written to
    report_path(ctx) and returned. An unreachable server raises UserError (one line, as plan does)."""
    from pipeline.sources.cave import CaveSource

    cfg = ctx.cfg
    if cfg.source != "cave":
        raise UserError(
            f"config/{cfg.species}.yaml: preflight checks a source: cave species (this one is "
            f"{cfg.source}: nothing to contact)"
        )
    source = CaveSource(cfg, token=ctx.cave_token)
    report = Report(cfg.species)
    if record is not None:
        _write_config(Path(record), cfg)
    with Recorder(record, secrets=[source.session.token() or ""]) as recorder:
        flight = Preflight(cfg, source, time.time() if now is None else now, workers, echo)
        report.checks = flight.run()
        report.requests = len(recorder)
        bound = Check(
            "requests",
            OK if len(recorder) <= REQUEST_BOUND else FAIL,
            f"{len(recorder)} requests (bound {REQUEST_BOUND})",
        )
        report.checks.append(bound)
        echo(bound.line())
        report.latency = recorder.latency()
    if flight.found.batch is not None:
        probe = flight.found.batch
        report.limits["operation_details_batch"] = {
            "largest_ok": probe.largest_ok,
            "largest_url_bytes": flight.found.batch_url_bytes,
            "smallest_refused": probe.smallest_refused,
            "asked": probe.asked,
        }
    report.tracebacks = flight.found.tracebacks
    for line in report.lines()[len(report.checks) :]:  # the checks were printed as they ran
        echo(line)
    report.write(report_path(ctx))
    return report


def _write_config(directory: Path, cfg) -> None:  # noqa: ANN001
    """The species config beside the recording: the replay serves its URLs (never a token: configs have none)."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))


__all__ += ["FAIL", "Check"]
