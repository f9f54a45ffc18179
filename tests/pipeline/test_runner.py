import dataclasses
import json
import threading

import pyarrow.parquet as pq
import pytest

from config import load_config
from core.atomic import atomic_path, write_text
from core.errors import UserError
from core.ledger import Failure
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.runner import run_stage
from pipeline.stage import Outcome, Partition, StageBase, is_done, to_retry


class CountingStage(StageBase):
    """Writes one text file per partition; partition 3's sample 0 fails; `broken` partitions raise."""

    name = "toy"
    reads = ()
    unit = "rows"

    def __init__(self, n_parts=5, fingerprint="v1", broken=()):
        self.n_parts, self.fingerprint, self.broken = n_parts, fingerprint, set(broken)

    def partitions(self, ctx, graph=None):
        return [
            Partition(self.name, i, 4, f"{self.fingerprint}-{i}", members=tuple(f"s{i}-{k}" for k in range(4)))
            for i in range(self.n_parts)
        ]

    def run(self, ctx, part, prior):
        if part.index in self.broken:
            raise RuntimeError("boom")
        runs = part.output_file(ctx, ".runs")
        count = int(runs.read_text()) + 1 if runs.exists() else 1
        write_text(runs, str(count))
        write_text(part.output_file(ctx, ".txt"), f"partition {part.index}")
        failures = []
        if part.index == 3:
            failures.append(Failure(f"s{part.index}-0", ctx.species, "merge_edit", self.name, "bad_point", "x"))
        return Outcome(built=part.n_samples - len(failures), failures=failures, new_failures=len(failures),
                       outputs=[part.output_file(ctx, ".txt")])  # fmt: skip


def _run(stage, ctx, **kw):
    return run_stage(StageGraph(ctx, {stage.name: stage}), stage.name, **kw)


@pytest.fixture
def ctx(tmp_path):
    return BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")


def _runs(ctx, stage):
    return [int(p.output_file(ctx, ".runs").read_text()) for p in stage.partitions(ctx)]


@pytest.mark.parametrize("scheduler", ["sync", "threads", pytest.param("processes", marks=pytest.mark.slow)])
def test_runs_every_partition_once_and_records_failures(ctx, scheduler):
    stage = CountingStage()
    summary = _run(stage, ctx, scheduler=scheduler, workers=2, progress=False)
    assert (summary.ran, summary.skipped, summary.samples, summary.failures) == (5, 0, 19, 1)
    assert _runs(ctx, stage) == [1] * 5
    ledger = pq.read_table(ctx.ledger_path).to_pylist()
    assert [(r["sample_id"], r["stage"], r["reason"]) for r in ledger] == [("s3-0", "toy", "bad_point")]


def test_rerun_skips_done_force_redoes(ctx):
    stage = CountingStage()
    _run(stage, ctx, scheduler="sync", progress=False)
    again = _run(stage, ctx, scheduler="sync", progress=False)
    assert (again.ran, again.skipped) == (0, 5)
    assert _runs(ctx, stage) == [1] * 5
    _run(stage, ctx, scheduler="sync", force=True, progress=False)
    assert _runs(ctx, stage) == [2] * 5
    # the ledger is rebuilt from partition files, never duplicated
    assert len(pq.read_table(ctx.ledger_path)) == 1


def test_changed_fingerprint_reruns(ctx):
    _run(CountingStage(), ctx, scheduler="sync", progress=False)
    stage = CountingStage(fingerprint="v2")
    assert not any(is_done(ctx, p) for p in stage.partitions(ctx))
    assert _run(stage, ctx, scheduler="sync", progress=False).ran == 5


def test_broken_partition_keeps_the_others_and_resumes(ctx):
    with pytest.raises(UserError, match=r"stage toy: part-00002: RuntimeError: boom.*part-00002.log.*rerun to resume"):
        _run(CountingStage(broken={2}), ctx, scheduler="sync", progress=False)
    stage = CountingStage()
    assert [is_done(ctx, p) for p in stage.partitions(ctx)] == [True, True, False, True, True]
    log = stage.partitions(ctx)[2].log_path(ctx).read_text()
    assert "part-00002: RuntimeError: boom" in log.splitlines()[0]
    assert log.splitlines()[1] == "samples not built (4): s2-0 s2-1 s2-2 s2-3"
    assert "Traceback (most recent call last)" in log and 'raise RuntimeError("boom")' in log
    summary = _run(stage, ctx, scheduler="sync", progress=False)
    assert (summary.ran, summary.skipped) == (1, 4)
    assert _runs(ctx, stage) == [1] * 5
    assert not stage.partitions(ctx)[2].log_path(ctx).exists()  # the crash log goes once the partition is done


def test_marker_is_written_last_and_names_the_partition(ctx):
    stage = CountingStage(n_parts=1)
    _run(stage, ctx, scheduler="sync", progress=False)
    part = stage.partitions(ctx)[0]
    marker = json.loads(part.marker_path(ctx).read_text())
    assert marker["fingerprint"] == "v1-0" and marker["n_built"] == 4
    assert part.marker_path(ctx).stat().st_mtime_ns >= part.failures_path(ctx).stat().st_mtime_ns


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a" / "file.bin"
    write_text(target, "old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


@pytest.mark.slow  # waits out a connect timeout
def test_unreachable_distributed_scheduler_is_a_user_error(ctx, monkeypatch):
    monkeypatch.setattr("core.compute.CONNECT_TIMEOUT", "2s")
    with pytest.raises(UserError, match="cannot reach dask scheduler at tcp://127.0.0.1:9"):
        _run(CountingStage(), ctx, scheduler="tcp://127.0.0.1:9", progress=False)


def test_a_deleted_or_truncated_output_is_not_done(ctx):
    stage = CountingStage(n_parts=2)
    _run(stage, ctx, scheduler="sync", progress=False)
    first, second = stage.partitions(ctx)
    first.output_file(ctx, ".txt").unlink()
    second.output_file(ctx, ".txt").write_text("trunc")
    assert not is_done(ctx, first) and not is_done(ctx, second)
    assert _run(stage, ctx, scheduler="sync", progress=False).ran == 2


def test_stale_temp_files_of_a_killed_run_are_swept(ctx):
    stage = CountingStage(n_parts=1)
    stale = ctx.stage_dir("toy") / ".part-00000.txt.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half a file")
    _run(stage, ctx, scheduler="sync", progress=False)
    assert not stale.exists()


def test_a_stage_output_version_enters_only_that_stage_keys():
    from pipeline import __version__
    from pipeline.runner import code_version
    from pipeline.stages.fetch import FetchStage
    from pipeline.stages.render import RenderStage
    from render import OUTPUT_VERSION

    assert code_version(FetchStage()) == __version__  # fetch keys do not move when the render's output does
    assert code_version(RenderStage()) == f"{__version__}+render.{OUTPUT_VERSION}"


class KeyedStage(CountingStage):
    """A CountingStage whose samples have keys, that notes the prior run each partition is given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.priors = []

    def run(self, ctx, part, prior):
        self.priors.append(prior)
        outcome = super().run(ctx, part, prior)
        kept = [m for m in part.members if prior is not None and prior.reusable(m, f"key-{m}")]
        outcome.samples = {m: f"key-{m}" for m in part.members}
        outcome.reused, outcome.built = len(kept), outcome.built - len(kept)
        return outcome


def test_a_marker_records_each_samples_key_and_force_hands_the_rerun_no_prior(ctx):
    stage = KeyedStage(n_parts=1)
    _run(stage, ctx, scheduler="sync", progress=False)
    marker = json.loads(stage.partitions(ctx)[0].marker_path(ctx).read_text())
    assert marker["samples"] == {f"s0-{k}": f"key-s0-{k}" for k in range(4)}
    changed = KeyedStage(n_parts=1, fingerprint="v2")  # inputs changed: the rerun may keep what has the same key
    summary = _run(changed, ctx, scheduler="sync", progress=False)
    assert changed.priors[0] is not None and changed.priors[0].reusable("s0-0", "key-s0-0")
    assert summary.reused == 4 and summary.line().endswith(", 4 reused")
    forced = KeyedStage(n_parts=1, fingerprint="v2")
    summary = _run(forced, ctx, scheduler="sync", force=True, progress=False)
    assert forced.priors == [None] and summary.reused == 0 and "reused" not in summary.line()


def test_a_summary_line_says_how_many_samples_were_kept_and_scripts_read_it_back():
    from pipeline.runner import StageSummary, parse_summaries

    line = StageSummary("render", 4, 3, 1, 40, 2, 1.25, reused=7).line()
    assert line == "render: 4 partitions (3 run, 1 already done), 40 samples, 2 failures, 1.2 s, 7 reused"
    assert parse_summaries("x\n" + line + "\n")["render"] == {"parts": 4, "ran": 3, "done": 1, "samples": 40,
                                                             "failures": 2, "reused": 7}  # fmt: skip
    assert not StageSummary("fetch", 1, 1, 0, 5, 0, 0.5).line().endswith("reused")


class _Upstream(StageBase):
    name = "up"
    reads = ()
    unit = "rows"

    def partitions(self, ctx, graph=None):
        return [Partition(self.name, 0, 1, "up-fp")]

    def incomplete(self, ctx, graph):
        return "up: part-00000 is not done: run `make stage STAGE=up`"


def test_a_stage_whose_upstream_is_not_complete_refuses_in_one_line_and_writes_no_marker(ctx):
    stage = CountingStage(n_parts=2)
    stage.consumes = ("up",)
    graph = StageGraph(ctx, {"up": _Upstream(), stage.name: stage})
    with pytest.raises(UserError, match=r"^species demo, stage toy: up: part-00000 is not done: run `make stage"):
        run_stage(graph, stage.name, scheduler="sync", progress=False)
    assert not any(p.marker_path(ctx).exists() or p.output_file(ctx, ".txt").exists() for p in stage.partitions(ctx))


def test_a_crashed_partition_is_listed_by_status_failed_with_its_unbuilt_samples_and_log(ctx):
    from pipeline.build import crashed

    with pytest.raises(UserError):
        _run(CountingStage(broken={1}), ctx, scheduler="sync", progress=False)
    (entry,) = crashed(ctx.work_dir, ctx.out_dir)
    assert (entry["species"], entry["stage"], entry["partition"]) == ("demo", "toy", "part-00001")
    assert entry["not_built"] == [f"s1-{k}" for k in range(4)] and "RuntimeError: boom" in entry["what"]
    assert entry["log"] == str(CountingStage().partitions(ctx)[1].log_path(ctx))


def test_a_change_of_level_moves_the_old_layout_to_previous_where_reuse_reads_it(ctx):
    from core.atomic import write_json
    from pipeline.reuse import LEVEL_FILE, load_prior
    from pipeline.runner import relayout

    folder = ctx.stage_dir("toy")
    folder.mkdir(parents=True)
    for i in range(2):  # an old layout of level 1
        write_text(folder / f"part-{i:05d}.txt", f"old {i}")
        write_json(folder / f"part-{i:05d}.done", {"level": 1, "index": i, "samples": {f"{i}0aa": "k"}, "outputs": {}})
    same = [Partition("toy", i, 1, "fp", level=1) for i in range(2)]
    relayout(ctx, "toy", same)
    assert not (folder / "previous").exists()  # the same level: nothing moves
    relayout(ctx, "toy", [Partition("toy", i, 1, "fp", level=2) for i in range(4)])
    assert sorted(p.name for p in (folder / "previous").iterdir()) == sorted(
        [LEVEL_FILE, "part-00000.done", "part-00000.txt", "part-00001.done", "part-00001.txt"])  # fmt: skip
    assert not list(folder.glob("part-*"))
    assert load_prior(ctx, "toy", 0, 2).reusable("00aa", "k")  # new partition 0 lies inside old partition 0


class CrashingSampleStage(CountingStage):
    """Partition 0's sample s0-1 failed on an unexpected exception (recorded by the sample loop as it does)."""

    def run(self, ctx, part, prior):
        outcome = super().run(ctx, part, prior)
        if part.index == 0:
            tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: a bug'
            outcome.crashed = {"s0-1": tb}
            outcome.failures.append(Failure("s0-1", ctx.species, "merge_edit", self.name, "unexpected_ValueError", tb))
        return outcome


def test_a_sample_failing_on_an_unexpected_exception_is_in_the_ledger_and_its_partitions_log(ctx):
    ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"max_failed_fraction": 0.5}))  # within the budget
    stage = CrashingSampleStage(n_parts=2)
    summary = _run(stage, ctx, scheduler="sync", progress=False)
    log = stage.partitions(ctx)[0].log_path(ctx)
    text = log.read_text()
    assert "1 samples failed on unexpected exceptions" in text.splitlines()[0] and "sample s0-1:" in text
    assert "ValueError: a bug" in text and not stage.partitions(ctx)[1].log_path(ctx).exists()
    assert summary.crashed_samples == 1 and str(log) in summary.line()
    ledger = {r["sample_id"]: r for r in pq.read_table(ctx.ledger_path).to_pylist()}
    assert ledger["s0-1"]["reason"] == "unexpected_ValueError" and "Traceback" in ledger["s0-1"]["exception"]


def test_failures_for_the_servers_sake_past_the_budget_stop_the_stage_in_one_line_once_every_partition_sealed(ctx):
    """1 of 8 rows failed on an unexpected exception: past max_failed_fraction (0.01), the stage stops in one line
    naming the reason; its partitions are sealed and the ledger written, and the marker counts the failure to retry,
    so the next run redoes only that partition."""
    stage = CrashingSampleStage(n_parts=2)
    with pytest.raises(UserError) as stopped:
        _run(stage, ctx, scheduler="sync", progress=False)
    text = str(stopped.value)
    assert "\n" not in text and "stage toy: 1 of 8 rows" in text and "over max_failed_fraction 0.01" in text
    assert "unexpected_ValueError 1" in text
    parts = stage.partitions(ctx)
    assert all(is_done(ctx, p) for p in parts) and [to_retry(ctx, p) for p in parts] == [1, 0]
    assert "s0-1" in pq.read_table(ctx.ledger_path).column("sample_id").to_pylist()


def test_a_partition_that_dies_writing_its_failures_file_leaves_no_marker(ctx, monkeypatch):
    """Markers last: the marker is written after the outputs and the failures file, never before, so a crash in
    between leaves the partition not done (and a rerun redoes it)."""
    import pipeline.runner as runner

    def dies(path, failures):  # noqa: ANN001, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(runner, "write_failures", dies)
    stage = CountingStage(n_parts=1)
    with pytest.raises((OSError, UserError), match="disk full"):  # raised as it is, or as the stage's one line
        _run(stage, ctx, scheduler="sync", progress=False)
    part = stage.partitions(ctx)[0]
    assert part.output_file(ctx, ".txt").exists()  # the output was written ...
    assert not part.marker_path(ctx).exists() and not is_done(ctx, part)  # ... but the partition is not done


class _Producer(CountingStage):
    """Settles its partition's samples one by one; the second waits until the streaming stage has taken the first."""

    name = "produce"

    def __init__(self, taken):
        super().__init__(n_parts=1)
        self.taken = taken

    def run(self, ctx, part, prior, on_sample=None):
        outcome = super().run(ctx, part, prior)
        for i, member in enumerate(part.members):
            if i == 1:  # the consumer must be working on sample 0 while this partition still runs
                assert self.taken.wait(timeout=30), "the streaming stage did not take sample 0 while this ran"
            on_sample(member, (part.output_file(ctx, ".txt"), f"sha-{member}"))
        return outcome


class _Consumer(StageBase):
    name = "consume"
    reads = ()
    unit = "rows"
    streams_from = "produce"

    def __init__(self, taken):
        self.taken, self.seen = taken, []

    def partition_of(self, ctx, upstream):
        return Partition(self.name, upstream.index, upstream.n_samples, "consume-fp", upstream.level, upstream.members)

    def run(self, ctx, part, prior, upstream=None):
        for member in part.members:
            self.seen.append((member, upstream(member)[1]))
            self.taken.set()
        write_text(part.output_file(ctx, ".txt"), "consumed")
        return Outcome(built=len(part.members), outputs=[part.output_file(ctx, ".txt")])


def test_a_streaming_stage_works_on_each_sample_as_soon_as_its_upstream_settled_it(ctx):
    import threading

    from pipeline.runner import execute_streamed

    taken = threading.Event()
    first, second = _Producer(taken), _Consumer(taken)
    part = first.partitions(ctx)[0]
    up, down = execute_streamed(first, second, ctx, part, False)
    assert up.error is None and down.error is None and down.built == 4
    assert second.seen == [(m, f"sha-{m}") for m in part.members]
    assert is_done(ctx, part) and is_done(ctx, second.partition_of(ctx, part))  # each sealed with its own marker


class UnavailableOnceStage(CountingStage):
    """Partition 1's sample s1-2 could not be had from a server on its first run (a retryable failure)."""

    def run(self, ctx, part, prior):
        outcome = super().run(ctx, part, prior)
        if part.index == 1 and int(part.output_file(ctx, ".runs").read_text()) == 1:
            gone = Failure("s1-2", ctx.species, "merge_edit", self.name, "mesh_unavailable", "HTTP 500")
            outcome.failures.append(gone)
        return outcome


def test_the_next_run_retries_only_the_partitions_holding_failures_to_retry_once(ctx):
    """A sealed partition with an unavailable sample is done (downstream may go on) but the next run of its stage
    runs it again, once, for that failure; the others are skipped; once answered, nothing runs again."""
    ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"max_failed_fraction": 0.5}))
    stage = UnavailableOnceStage(n_parts=3)
    first = _run(stage, ctx, scheduler="sync", progress=False)
    parts = stage.partitions(ctx)
    assert all(is_done(ctx, p) for p in parts) and [to_retry(ctx, p) for p in parts] == [0, 1, 0]
    assert "1 to retry (mesh_unavailable 1)" in first.line()
    second = _run(stage, ctx, scheduler="sync", progress=False)
    assert _runs(ctx, stage) == [1, 2, 1] and second.ran == 1
    assert "1 failures of an earlier run retried" in second.line()
    assert [to_retry(ctx, p) for p in parts] == [0, 0, 0]
    _run(stage, ctx, scheduler="sync", progress=False)
    assert _runs(ctx, stage) == [1, 2, 1]


class _Counting(CountingStage):
    """Reports what each partition "met", as a source's counters would be."""

    def run(self, ctx, part, prior):
        outcome = super().run(ctx, part, prior)
        outcome.stats = {"requests": {"refused": 1, "sizes": {"change_log": [part.index]}}}
        return outcome


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_each_partitions_stats_come_back_with_it_and_are_merged_into_its_stages_summary(ctx, scheduler):
    """The runner adds up what every unit met (numbers summed, lists joined) without knowing what it counts: the
    twin build's closing lines read it from the summaries. A skipped partition met nothing."""
    summary = _run(_Counting(n_parts=4), ctx, scheduler=scheduler, progress=False)
    assert summary.stats["requests"]["refused"] == 4
    assert sorted(summary.stats["requests"]["sizes"]["change_log"]) == [0, 1, 2, 3]
    assert _run(_Counting(n_parts=4), ctx, scheduler=scheduler, progress=False).stats == {}


def test_amend_moves_a_sealed_units_outputs_to_dropped_and_back_keeping_it_done_and_its_digest(ctx):
    """`keep_fetched: false` changes a sealed marker through the runner alone: dropped files are not looked for on
    disk (the unit stays done) and stay in the digest downstream sees; a file written again is an output again."""
    from pipeline.markers import outputs_digest, read_marker
    from pipeline.runner import amend

    stage = CountingStage(n_parts=1)
    _run(stage, ctx, scheduler="sync", progress=False)
    (part,) = stage.partitions(ctx)
    before = read_marker(part.marker_path(ctx))
    (rel, record) = next(iter(before["outputs"].items()))
    amend(ctx, part.marker_path(ctx), drop={rel: {**record, "crop_half_nm": 1.0}})
    (ctx.work_dir / rel).unlink()
    dropped = read_marker(part.marker_path(ctx))
    assert dropped["outputs"] == {} and dropped["dropped"][rel]["sha256"] == record["sha256"]
    assert is_done(ctx, part) and outputs_digest(dropped) == outputs_digest(before)
    assert dropped["fingerprint"] == before["fingerprint"] and dropped["samples"] == before["samples"]
    (ctx.work_dir / rel).write_text(f"partition {part.index}")
    amend(ctx, part.marker_path(ctx), add=[ctx.work_dir / rel])
    again = read_marker(part.marker_path(ctx))
    assert again["dropped"] == {} and again["outputs"][rel]["sha256"] == record["sha256"]
    assert is_done(ctx, part) and outputs_digest(again) == outputs_digest(before)


class _FlakyProducer(CountingStage):
    """Streams its samples; sample s0-3 cannot be had from a server (retryable) until `answers` is set."""

    name = "produce"

    def __init__(self):
        super().__init__(n_parts=1)
        self.answers = False

    def run(self, ctx, part, prior, on_sample=None):
        outcome = super().run(ctx, part, prior)
        got = part.members if self.answers else part.members[:3]
        write_text(part.output_file(ctx, ".txt"), ",".join(got))
        for member in part.members:
            if on_sample is not None:
                on_sample(member, (part.output_file(ctx, ".txt"), member) if member in got else None)
        if not self.answers:
            outcome.failures = [Failure("s0-3", ctx.species, "merge_edit", self.name, "mesh_unavailable", "500")]
        return outcome


class _DigestConsumer(_Consumer):
    """Fingerprinted by what the producer wrote (as render is by fetch's outputs); counts its runs."""

    def __init__(self):
        super().__init__(threading.Event())
        self.runs = 0

    def partition_of(self, ctx, upstream):
        from pipeline.markers import outputs_digest, read_marker

        fp = outputs_digest(read_marker(upstream.marker_path(ctx)))
        return Partition(self.name, upstream.index, upstream.n_samples, fp, upstream.level, upstream.members)

    def run(self, ctx, part, prior, upstream=None):
        self.runs += 1
        for member in part.members:
            if upstream is not None:
                upstream(member)
        write_text(part.output_file(ctx, ".txt"), "consumed")
        return Outcome(built=len(part.members), outputs=[part.output_file(ctx, ".txt")])


def test_a_partition_run_again_only_for_failures_that_fail_again_leaves_its_consumer_alone(ctx):
    """A rebuild with nothing changed retries the failures for the servers' sake; when they fail again the
    streamed consumer (render) is neither run nor rewritten; when one comes this time, it runs."""
    from pipeline.runner import execute_streamed

    ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"max_failed_fraction": 0.5}))
    first, second = _FlakyProducer(), _DigestConsumer()
    part = first.partitions(ctx)[0]
    up, down = execute_streamed(first, second, ctx, part, False)
    assert up.error is None and down is not None and second.runs == 1 and to_retry(ctx, part) == 1
    consumed = second.partition_of(ctx, part).output_file(ctx, ".txt")
    mtime = consumed.stat().st_mtime_ns
    up, down = execute_streamed(first, second, ctx, part, False)  # the retry fails again
    assert up.error is None and not up.skipped and down is None
    assert second.runs == 1 and consumed.stat().st_mtime_ns == mtime
    assert is_done(ctx, second.partition_of(ctx, part))
    first.answers = True  # the retry is answered: what the producer wrote changed, the consumer runs
    up, down = execute_streamed(first, second, ctx, part, False)
    assert down is not None and down.error is None and second.runs == 2 and to_retry(ctx, part) == 0
    assert is_done(ctx, second.partition_of(ctx, part))
