"""The whole pipeline at scale (issue 25): bank -> fetch -> render -> split -> shard -> verify -> report on a
dask.distributed cluster of separate processes, through the hostile twin at 30 ms median latency, with a worker
killed -9 mid-render (and another started in its place) and the build killed -9 mid-shard (and run again).

    .venv/bin/python -m benchmarks.bench_pipeline_scale --samples 20000        # ~1.5 h on 2 cores, ~25 GB of disk
    .venv/bin/python -m benchmarks.bench_pipeline_scale --samples 2000 20000   # both, and the growth side by side
    .venv/bin/python -m benchmarks.bench_pipeline_scale --table 2000 20000     # the side by side of saved runs

The world is the demo world generated for the sample count (benchmarks/scale_world.py; reused when present). This
process serves it (the twin's threads: its CPU is the twin's) and watches the others; it starts a `dask scheduler`
and WORKERS `dask worker` processes (each its own session, a nanny and a worker, as a machine of a cluster) and runs
every step as its own `python -m pipeline ...` process with `--scheduler tcp://...`, as a user on a cluster would.
Every figure is measured in this run: per stage samples/s and CPU ms per sample (the workers' CPU, from /proc),
requests and bytes per sample by endpoint (the twin's log), peak RSS of the scheduler, the workers and the stage's
main process (sampled from /proc every 0.2 s), the work dir's bytes and files per sample, the dask tasks the
scheduler ran (its task stream), and the time to list the stage's partitions (the stage's own listing, timed here);
then the release, verify, deep verify, report, `status`, a no-op rebuild, and `plan`'s estimate beside it all. A run
writes its figures to `<root>/results.json`; `--table` prints the per-sample figures of saved runs side by side.
A run starts from an empty work dir and release (the world is kept): it measures a whole build, not a resume.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import descendants, status_mb
from benchmarks.scale_world import ensure_scale_world, n_sites, scale_root, write_config_dir

LATENCY_MS = 30.0
HOSTILE_SEED = 7
WORKERS = 2
STAGES = ("bank", "fetch", "render", "split")
POLL_S = 0.2
DASK = Path(sys.executable).parent / "dask"
TICK = os.sysconf("SC_CLK_TCK")


# --- processes, as /proc sees them ------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime of the process (all its threads)


@dataclass
class Watch:
    """Samples the processes of each role (scheduler, workers, main) every POLL_S: peak RSS per role and process
    (since `mark`), and each process's last CPU seconds (a killed process keeps its last sample)."""

    roots: dict[str, list[int]] = field(default_factory=dict)  # role -> root pids (their descendants too)
    peak: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # role -> max RSS of one process
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, last CPU seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Watch:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def set(self, role: str, pids: list[int]) -> None:
        with self._lock:
            self.roots[role] = list(pids)

    def sample(self) -> None:
        with self._lock:
            roles = {role: list(pids) for role, pids in self.roots.items()}
        for role, pids in roles.items():
            for root in pids:
                for pid in descendants(root):
                    cpu = _cpu_s(pid)
                    if cpu is None:
                        continue
                    with self._lock:
                        self.cpu[pid] = (role, cpu)
                        self.peak[role] = max(self.peak[role], status_mb(pid, "VmRSS"))

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.sample()

    def mark(self) -> tuple[dict, dict]:
        """(peaks since the last mark, CPU seconds per role so far) and a new mark."""
        self.sample()
        with self._lock:
            peaks = dict(self.peak)
            self.peak.clear()
            cpu: dict[str, float] = defaultdict(float)
            for role, seconds in self.cpu.values():
                cpu[role] += seconds
        return peaks, dict(cpu)


# --- the cluster -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A dask scheduler and worker processes, each its own session (a worker: its nanny and its process)."""

    def __init__(self, root: Path, n_workers: int) -> None:
        self.root = root
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._spawn([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                      "--no-dashboard"], "scheduler")  # fmt: skip
        self.workers: list[subprocess.Popen] = []
        self.started = 0
        from distributed import Client

        deadline = time.monotonic() + 120
        while True:
            try:
                self.client = Client(self.address, timeout="5s")
                break
            except OSError:
                if time.monotonic() > deadline or self.scheduler.poll() is not None:
                    raise
                time.sleep(0.5)
        for _ in range(n_workers):
            self.add_worker()
        self.client.wait_for_workers(n_workers, timeout=120)
        self.client.get_task_stream()  # installs the scheduler's task stream: every task from now on is recorded

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child's
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)

    def add_worker(self) -> subprocess.Popen:
        self.started += 1
        name = f"worker-{self.started}"
        proc = self._spawn([str(DASK), "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--name", name,
                            "--no-dashboard", "--local-directory", str(self.root / "dask" / name)], name)  # fmt: skip
        self.workers.append(proc)
        return proc

    def worker_address(self, proc: subprocess.Popen) -> str | None:
        name = f"worker-{self.workers.index(proc) + 1}"
        for address, info in self.client.scheduler_info()["workers"].items():
            if info.get("name") == name:
                return address
        return None

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def tasks_since(self, start: float) -> int:
        return len(self.client.get_task_stream(start=start))

    def close(self) -> None:
        self.client.close()
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# --- one command, watched ----------------------------------------------------------------------------------------


@dataclass
class Ran:
    text: str
    wall_s: float
    killed: bool


def _run(cmd: list[str], env: dict, watch: Watch, kill_when=None, on_tick=None) -> Ran:  # noqa: ANN001
    """Run one command in its own session, as the main role of `watch`; SIGKILL its group when `kill_when()`."""
    start = time.perf_counter()
    log_path = Path(env["CB2_BENCH_LOG"])
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        watch.set("main", [proc.pid])
        killed = False
        while proc.poll() is None:
            if on_tick is not None:
                on_tick()
            if kill_when is not None and not killed and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(POLL_S)
        proc.wait()
        watch.sample()
        log.seek(0)
        text = log.read()
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed ({proc.returncode}):\n{text[-4000:]}")
    return Ran(text, time.perf_counter() - start, killed)


def _tree(path: Path) -> tuple[int, int]:
    """(bytes, files) under path."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def _stage_line(text: str, stage: str) -> str:
    lines = [x for x in text.splitlines() if x.startswith(f"{stage}:")]
    return lines[-1] if lines else ""


def _ran_done(line: str) -> tuple[int, int] | None:
    found = re.search(r"\((\d+) run, (\d+) already done\)", line)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


# --- the run -----------------------------------------------------------------------------------------------------


def _by_endpoint(records: list) -> dict[str, dict[str, int]]:
    from sim.twin.hostile import endpoint_class

    out: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "bytes": 0})
    for r in records:
        name = endpoint_class(r.path) or _path_class(r.path)
        out[name]["requests"] += 1
        out[name]["bytes"] += r.bytes_sent
    return dict(out)


def _path_class(path: str) -> str:
    """A request the hostile classes do not name: its layer (em / segmentation chunks, mesh fragments, info)."""
    parts = [p for p in path.strip("/").split("/") if p]
    for i, p in enumerate(parts):
        if p in ("em", "segmentation"):
            rest = parts[i + 1 :]
            if not rest or rest[-1] == "info":
                return f"{p} info"
            return f"{p} {'mesh' if 'mesh' in rest[0] else 'chunk'}"
    return parts[0] if parts else "/"


def _listing_s(work: Path, out: Path, stage: str) -> float:
    """Seconds the stage's partitions take to list (the runner's own listing, in a fresh graph), in this process."""
    from pipeline.context import make_context
    from pipeline.stages.species import species_graph

    ctx = make_context("demo", work, out)
    start = time.perf_counter()
    species_graph(ctx).partitions(stage)
    return time.perf_counter() - start


def measure(samples: int, workers: int = WORKERS) -> dict:  # noqa: PLR0915 - one run, step by step
    from pipeline.twin_build import TwinOptions, twin_environment

    root = scale_root(samples)
    config_dir = write_config_dir(samples)
    world, world_s = ensure_scale_world(samples)
    work, out = root / "work", root / "out"
    for d in (work, out, root / "dask"):
        shutil.rmtree(d, ignore_errors=True)
    work.mkdir(parents=True)
    got: dict = {"samples_asked": samples, "sites": n_sites(samples), "workers": workers,
                 "world_s": round(world_s, 1), "world_bytes": _tree(world)[0], "stages": {}}  # fmt: skip
    opts = TwinOptions(world=world, port=_free_port(), latency_ms=LATENCY_MS, hostile=HOSTILE_SEED,
                       config_dir=config_dir)  # fmt: skip
    watch = Watch().start()
    cluster = Cluster(root, workers)
    watch.set("scheduler", [cluster.scheduler.pid])
    watch.set("workers", [p.pid for p in cluster.workers])
    try:
        with twin_environment("demo", work, opts) as server:
            env = {**os.environ, "CAVE_TOKEN": server.token, "CB2_BENCH_LOG": str(root / "command.log")}
            base = ["--species", "demo", "--work", str(work), "--out", str(out), "--no-progress"]
            sched = ["--scheduler", cluster.address]
            py = [sys.executable, "-m", "pipeline"]
            got["plan_before"] = _plan_before(py, base, env, workers)  # as a user sizes the build: nothing built yet
            twin_cpu0 = time.process_time()
            watch.mark()
            n_rows = 0
            for stage in STAGES:
                seq0, t0, twin0 = len(server.log), time.time(), time.process_time()
                _, cpu0 = watch.mark()
                kill = _worker_killer(cluster, watch, work, stage) if stage == "render" else None
                ran = _run([*py, "stage", stage, *base, *sched], env, watch, on_tick=kill)
                peaks, cpu1 = watch.mark()
                server.log.wait_idle()
                records = server.log.records(seq0)
                if stage == "bank":
                    n_rows = _bank_rows(work)
                files = _tree(work / "demo" / stage)
                got["stages"][stage] = {
                    "line": _stage_line(ran.text, stage),
                    "wall_s": ran.wall_s,
                    "rows": n_rows,
                    "worker_cpu_s": cpu1.get("workers", 0.0) - cpu0.get("workers", 0.0),
                    # from /proc, not wait4: the bench reaps the killed worker too, whose CPU is not the stage's
                    "main_cpu_s": cpu1.get("main", 0.0) - cpu0.get("main", 0.0),
                    "twin_cpu_s": time.process_time() - twin0,
                    "peak_rss_mb": peaks,
                    "requests": _by_endpoint(records),
                    "work_bytes": files[0],
                    "work_files": files[1],
                    "dask_tasks": cluster.tasks_since(t0),
                    "listing_s": _listing_s(work, out, stage),
                    **(kill.report if kill is not None else {}),
                }
            got["twin_cpu_s"] = time.process_time() - twin_cpu0
            got["rows"] = n_rows
            got["release"] = _release(py, base, sched, env, watch, cluster, out)
            got["after"] = _after(py, base, sched, env, watch, work, out)
            got["plan"] = _plan(py, work, out, workers, env)  # the twin still up: plan asks it for the roots
            got["hidden"] = server.app.hostility.limits.describe("v2") if server.app.hostility else {}
    finally:
        watch.stop()
        cluster.close()
    got["work_bytes"], got["work_files"] = _tree(work)
    got["release_bytes"] = _tree(out)[0]
    (root / "results.json").write_text(json.dumps(got, indent=1, sort_keys=True, default=str))
    return got


def _bank_rows(work: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(work / "demo" / "bank.parquet").num_rows


class _WorkerKill:
    """Once half of the render partitions are sealed: ask the scheduler what the first worker is running, kill -9
    its whole session (nanny and worker: a machine lost), start another worker in its place."""

    def __init__(self, cluster: Cluster, watch: Watch, render_dir: Path, n_parts: int) -> None:
        self.cluster, self.watch, self.render_dir, self.n_parts = cluster, watch, render_dir, n_parts
        self.report: dict = {}

    def __call__(self) -> None:
        from core.layout import MARKER

        if self.report:
            return
        sealed = len(list(self.render_dir.glob(f"part-*{MARKER}")))
        if sealed < max(1, self.n_parts // 2):
            return
        victim = self.cluster.workers[0]
        address = self.cluster.worker_address(victim)
        processing = self.cluster.client.processing(workers=[address]) if address else {}
        in_flight = sorted(str(k) for keys in processing.values() for k in keys)
        self.cluster.kill(victim)
        replacement = self.cluster.add_worker()
        self.watch.set("workers", [p.pid for p in self.cluster.workers if p.poll() is None])
        self.report = {"killed_worker_after_sealed": sealed, "killed_worker_in_flight": in_flight,
                       "replacement_pid": replacement.pid}  # fmt: skip


def _worker_killer(cluster: Cluster, watch: Watch, work: Path, stage: str) -> _WorkerKill:
    from pipeline.context import make_context
    from pipeline.stages.species import species_graph

    n_parts = len(species_graph(make_context("demo", work, work.parent / "out")).partitions(stage))
    return _WorkerKill(cluster, watch, work / "demo" / stage, n_parts)


def _release(py, base, sched, env, watch, cluster, out: Path) -> dict:  # noqa: ANN001
    """The shard stage killed -9 once its first shard is in place, then run again; verify, deep verify, report."""

    building = out.parent / f".{out.name}.building"  # shard/release.py: the release is written there, then swapped in

    def shards(where: Path = out) -> int:
        return sum(1 for split in ("train", "val", "test") for _ in (where / split).glob("*.parquet"))

    t0 = time.time()
    watch.mark()
    first = _run([*py, "stage", "shard", *base, *sched], env, watch, kill_when=lambda: shards(building) >= 1)
    shards_at_kill = shards(building)
    peaks_1, _ = watch.mark()
    second = _run([*py, "stage", "shard", *base, *sched], env, watch)
    peaks_2, _ = watch.mark()
    out_bytes, _ = _tree(out)
    got = {
        "killed": first.killed,
        "shards_at_kill": shards_at_kill,
        "first_wall_s": first.wall_s,
        "rerun_wall_s": second.wall_s,
        "rerun_line": _stage_line(second.text, "shard") or second.text.strip().splitlines()[-1:],
        "rerun_output": second.text[-2000:],
        "shards": shards(),
        "release_bytes": out_bytes,
        "peak_rss_mb_killed_run": peaks_1,
        "peak_rss_mb": peaks_2,
        "dask_tasks": cluster.tasks_since(t0),
    }
    ran = _run([*py, "verify", "--out", str(out), "--no-progress"], env, watch)
    got["verify"] = {"wall_s": ran.wall_s, "line": ran.text.strip().splitlines()[-1:]}
    ran = _run([*py, "verify", "--out", str(out), "--deep", *sched, "--no-progress"], env, watch)
    got["verify_deep"] = {"wall_s": ran.wall_s, "text": ran.text.strip()[-1500:], "ok": "OK" in ran.text}
    watch.mark()
    ran = _run([*py, "report", "--out", str(out)], env, watch)
    peaks, _ = watch.mark()
    got["report"] = {"wall_s": ran.wall_s, "peak_rss_mb": peaks.get("main", 0.0), "text": ran.text.strip()[-500:]}
    return got


def _markers(work: Path, out: Path) -> dict[str, tuple]:
    """Every marker of the work dir: (its fingerprint, its outputs' sha256s), and the release's shards.csv digest."""
    from core.hashing import sha256_file
    from core.layout import MARKER

    got = {}
    for path in sorted(work.rglob(f"*{MARKER}")):
        marker = json.loads(path.read_text())
        outputs = tuple(sorted((k, v["sha256"]) for k, v in marker.get("outputs", {}).items()))
        got[str(path.relative_to(work))] = (marker.get("fingerprint"), outputs)
    csv = out / "shards.csv"
    got["release shards.csv"] = (sha256_file(csv) if csv.exists() else None, os.stat(csv).st_mtime_ns)
    return got


def _changed(before: dict, after: dict) -> dict[str, list[str]]:
    """What a run changed: markers resealed (another fingerprint), outputs rewritten with other bytes, the release
    rewritten (shards.csv written again) or with other bytes."""
    out: dict[str, list[str]] = {"fingerprint": [], "outputs": [], "release": []}
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if key.startswith("release"):
            if b != a:
                out["release"].append("rewritten" + (", other bytes" if (b or (None,))[0] != a[0] else ", same bytes"))
        elif b is None or a is None or b[0] != a[0]:
            out["fingerprint"].append(key)
        elif b[1] != a[1]:
            out["outputs"].append(key)
    return out


def _after(py, base, sched, env, watch, work: Path, out: Path) -> dict:  # noqa: ANN001
    """`status` and a rebuild with nothing changed (which must redo nothing): what it ran, what it changed."""
    status = _run([*py, "status", "--work", str(work), "--out", str(out)], env, watch)
    before = _markers(work, out)
    rebuild = _run([*py, "build", *base, *sched], env, watch)
    lines = [x for x in rebuild.text.splitlines() if _ran_done(x) is not None]
    redone = sum(_ran_done(x)[0] for x in lines)
    return {"status_wall_s": status.wall_s, "status": status.text.strip()[-1500:],
            "noop_wall_s": rebuild.wall_s, "noop_lines": lines, "noop_redone_partitions": redone,
            "noop_changed": _changed(before, _markers(work, out)),
            "noop_text": rebuild.text.strip()[-2000:]}  # fmt: skip


def _plan(py, work: Path, out: Path, workers: int, env: dict) -> dict:  # noqa: ANN001
    """`plan` as a user runs it on the built work dir, and its estimate of this build in numbers (pipeline/plan.py
    estimate_build, the function `plan` prints: the rows and proofread roots measured here, this config's sizes)."""
    import pyarrow.parquet as pq

    from pipeline.context import make_context
    from pipeline.plan import TWIN_COSTS, estimate_build

    ran = subprocess.run([*py, "plan", "--species", "demo", "--work", str(work), "--out", str(out), "--workers",
                          str(workers)], env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
    cfg = make_context("demo", work, out).cfg
    roots = sum(pq.read_metadata(p).num_rows for p in (work / "demo" / "roots").glob("part-*.parquet")
                if p.name.count(".") == 1)  # fmt: skip
    est = estimate_build(_bank_rows(work), TWIN_COSTS["cutout_voxels"], workers, cfg.fetch_threads,
                         cfg.partition_rows, roots=roots,
                         in_flight_per_host=cfg.cave_requests.max_in_flight_per_host)  # fmt: skip
    return {"text": ran.stdout.strip() + ran.stderr.strip()[-500:], "roots": roots,
            "hours": est.hours, "disk_gb": est.disk_gb, "requests": est.requests, "fetched_gb": est.fetched_gb}


def _plan_before(py, base, env, workers: int) -> dict:  # noqa: ANN001
    """`plan --json` on the empty work dir, as a user sizes a build before it: the rows estimated from sampled
    roots, every hour and byte that follows."""
    start = time.perf_counter()
    ran = subprocess.run([*py, "plan", *base[:6], "--workers", str(workers), "--json"], env=env,
                         capture_output=True, text=True, timeout=1800)  # fmt: skip
    if ran.returncode != 0:
        return {"error": (ran.stderr or ran.stdout).strip()[-500:]}
    return {**json.loads(ran.stdout), "wall_s": time.perf_counter() - start}


def plan_only(samples: int, workers: int = WORKERS) -> dict:
    """`plan` before the build for a saved run (its world served as the run served it, an empty work dir): what a
    user would have been told, beside what the run measured; written into the run's results.json."""
    from pipeline.twin_build import TwinOptions, twin_environment

    root = scale_root(samples)
    got = json.loads((root / "results.json").read_text())
    work = root / "plan-work"
    shutil.rmtree(work, ignore_errors=True)
    world, _ = ensure_scale_world(samples)
    opts = TwinOptions(world=world, port=_free_port(), latency_ms=LATENCY_MS, hostile=HOSTILE_SEED,
                       config_dir=write_config_dir(samples))  # fmt: skip
    with twin_environment("demo", work, opts) as server:
        env = {**os.environ, "CAVE_TOKEN": server.token}
        base = ["--species", "demo", "--work", str(work), "--out", str(root / "plan-out"), "--no-progress"]
        got["plan_before"] = _plan_before([sys.executable, "-m", "pipeline"], base, env, workers)
    shutil.rmtree(work, ignore_errors=True)
    (root / "results.json").write_text(json.dumps(got, indent=1, sort_keys=True, default=str))
    return got


def plan_before_beside_measured(got: dict) -> list[tuple[str, float, float]]:
    """(figure, the estimate `plan` gave before the build, measured) for the figures of the whole build."""
    before = got.get("plan_before") or {}
    if "build" not in before:
        return []
    return [("rows", before["build"]["rows"], got["rows"]), *plan_beside_measured(got, before["build"])]


def noop_figures(after: dict) -> dict[str, int]:
    """What the rebuild with nothing changed did, from its stages' summary lines: partitions run (a done partition
    runs again only to ask its ledgered failures again), samples built anew, samples reused, failures again."""
    from pipeline.runner import parse_summaries

    found = parse_summaries("\n".join(after.get("noop_lines", [])))
    keys = ("ran", "samples", "reused", "failures")
    return {k: sum(v[k] for v in found.values()) for k in keys}


def plan_beside_measured(got: dict, plan: dict | None = None) -> list[tuple[str, float, float]]:
    """(figure, plan's estimate, measured) for every figure `plan` gives of this build (`plan`: an estimate's
    figures, hours, requests, fetched_gb and disk_gb; by default the one made on the built work dir)."""
    plan = got["plan"] if plan is None else plan
    st, rel = got["stages"], got["release"]
    fetch_req = sum(e["requests"] for e in st["fetch"]["requests"].values())
    fetch_gb = sum(e["bytes"] for e in st["fetch"]["requests"].values()) / 1e9
    return [
        ("bank hours", plan["hours"]["bank"], st["bank"]["wall_s"] / 3600),
        ("fetch+render hours", plan["hours"]["fetch_render"], (st["fetch"]["wall_s"] + st["render"]["wall_s"]) / 3600),
        ("shard hours", plan["hours"]["shard"], rel["rerun_wall_s"] / 3600),
        ("whole build hours", plan["hours"]["total"],
         (sum(s["wall_s"] for s in st.values()) + rel["rerun_wall_s"]) / 3600),
        ("fetch requests", plan["requests"], fetch_req),
        ("GB fetched", plan["fetched_gb"], fetch_gb),
        ("release GB", plan["disk_gb"]["release"], rel["release_bytes"] / 1e9),
        ("work dir GB (keep_fetched)", plan["disk_gb"]["work_keep"], got["work_bytes"] / 1e9),
    ]  # fmt: skip


# --- printing ----------------------------------------------------------------------------------------------------


def per_sample(got: dict) -> dict[str, float]:
    """The figures that must not grow with the sample count, per sample (or per stage where they are one-off)."""
    rows = max(1, got["rows"])
    out: dict[str, float] = {}
    for stage, s in got["stages"].items():
        out[f"{stage} wall ms/sample"] = 1e3 * s["wall_s"] / rows
        out[f"{stage} worker CPU ms/sample"] = 1e3 * s["worker_cpu_s"] / rows
        out[f"{stage} main CPU ms/sample"] = 1e3 * s["main_cpu_s"] / rows
        out[f"{stage} requests/sample"] = sum(e["requests"] for e in s["requests"].values()) / rows
        out[f"{stage} KB fetched/sample"] = sum(e["bytes"] for e in s["requests"].values()) / rows / 1e3
        out[f"{stage} work KB/sample"] = s["work_bytes"] / rows / 1e3
        out[f"{stage} work files/sample"] = s["work_files"] / rows
        out[f"{stage} dask tasks/sample"] = s["dask_tasks"] / rows
        out[f"{stage} listing ms/sample"] = 1e3 * s["listing_s"] / rows
        for role, mb in s["peak_rss_mb"].items():
            out[f"{stage} peak RSS MB ({role})"] = mb
    rel = got["release"]
    out["shard ms/sample"] = 1e3 * rel["rerun_wall_s"] / rows
    out["release KB/sample"] = rel["release_bytes"] / rows / 1e3
    out["verify ms/sample"] = 1e3 * rel["verify"]["wall_s"] / rows
    out["verify --deep ms/sample"] = 1e3 * rel["verify_deep"]["wall_s"] / rows
    out["report ms/sample"] = 1e3 * rel["report"]["wall_s"] / rows
    out["report peak RSS MB"] = rel["report"]["peak_rss_mb"]
    for role, mb in rel["peak_rss_mb"].items():
        out[f"shard peak RSS MB ({role})"] = mb
    out["status ms/sample"] = 1e3 * got["after"]["status_wall_s"] / rows
    out["no-op rebuild ms/sample"] = 1e3 * got["after"]["noop_wall_s"] / rows
    return out


def print_run(got: dict) -> None:
    rows = got["rows"]
    print(f"== pipeline at scale: {rows:,} samples (world of {got['sites']} sites, generated in "
          f"{got['world_s']:.0f} s, {got['world_bytes'] / 1e9:.2f} GB), {got['workers']} dask workers, hostile twin "
          f"(seed {HOSTILE_SEED}) at "
          f"{LATENCY_MS:g} ms median ==")  # fmt: skip
    for stage, s in got["stages"].items():
        n = max(1, rows)
        req = sum(e["requests"] for e in s["requests"].values())
        print(f"{stage}: {s['line']}")
        print(f"  {n / s['wall_s']:.2f} samples/s; CPU ms per sample: workers {1e3 * s['worker_cpu_s'] / n:.1f}, "
              f"main {1e3 * s['main_cpu_s'] / n:.1f}, twin {1e3 * s['twin_cpu_s'] / n:.1f}; peak RSS MB: "
              + ", ".join(f"{k} {v:.0f}" for k, v in sorted(s["peak_rss_mb"].items())))  # fmt: skip
        print(f"  {req / n:.1f} requests and {sum(e['bytes'] for e in s['requests'].values()) / n / 1e3:.0f} KB per "
              "sample; by endpoint (requests, KB): " + ", ".join(
                  f"{k} {v['requests'] / n:.2f} / {v['bytes'] / n / 1e3:.0f}"
                  for k, v in sorted(s["requests"].items(), key=lambda kv: -kv[1]["requests"])))  # fmt: skip
        print(f"  work dir: {s['work_bytes'] / n / 1e3:.0f} KB and {s['work_files'] / n:.3f} files per sample; "
              f"{s['dask_tasks']:,} dask tasks; partitions listed in {s['listing_s']:.2f} s")  # fmt: skip
        if "killed_worker_in_flight" in s:
            ran = (_ran_done(s["line"]) or (0, 0))[0]
            print(f"  worker killed -9 after {s['killed_worker_after_sealed']} sealed partitions, running "
                  f"{len(s['killed_worker_in_flight'])} task(s); a new worker started; the stage went on to its end: "
                  f"{s['dask_tasks'] - ran} partition(s) run twice ({s['dask_tasks']} tasks for {ran} partitions)")
    rel = got["release"]
    print(f"shard: killed -9 with {rel['shards_at_kill']} shard(s) in place ({rel['first_wall_s']:.0f} s); the rerun: "
          f"{rel['rerun_line']} in {rel['rerun_wall_s']:.0f} s; {rel['shards']} shards, "
          f"{rel['release_bytes'] / 1e9:.2f} GB; peak RSS MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rel["peak_rss_mb"].items())))  # fmt: skip
    print(f"verify: {rel['verify']['line']} ({rel['verify']['wall_s']:.1f} s wall)")
    print(f"verify --deep: {rows / rel['verify_deep']['wall_s']:.0f} rows/s wall; "
          + " ".join(rel["verify_deep"]["text"].splitlines()[-2:]))  # fmt: skip
    print(f"report: {rel['report']['wall_s']:.1f} s, peak RSS {rel['report']['peak_rss_mb']:.0f} MB")
    after = got["after"]
    changed = after.get("noop_changed", {})
    noop = noop_figures(after)
    print(f"status: {after['status_wall_s']:.1f} s; no-op rebuild: {after['noop_wall_s']:.1f} s, "
          f"{noop['ran']} partitions run only to ask again their ledgered failures: {noop['samples']} samples built, "
          f"{noop['reused']} kept, {noop['failures']} failures again; markers resealed: "
          f"{len(changed.get('fingerprint', []))}, outputs with other bytes: {changed.get('outputs', [])}, release: "
          f"{changed.get('release') or 'untouched'}")  # fmt: skip
    for line in after["noop_lines"]:
        print(f"  {line}")
    print(f"work dir {got['work_bytes'] / 1e9:.2f} GB in {got['work_files']:,} files; release "
          f"{got['release_bytes'] / 1e9:.2f} GB")  # fmt: skip
    print("plan's estimate of this build (`plan` on its work dir; pipeline/plan.py estimate_build) beside the run:")
    _print_beside(plan_beside_measured(got))
    before = got.get("plan_before") or {}
    if "build" in before:
        print(f"`plan` before the build (the empty work dir, {before['sampled_roots']} roots sampled, "
              f"{before['wall_s']:.0f} s; the bank: {before['build']['bank_basis']}) beside the run:")  # fmt: skip
        _print_beside(plan_before_beside_measured(got))
    elif before:
        print(f"`plan` before the build failed: {before.get('error')}")


def _print_beside(rows: list[tuple[str, float, float]]) -> None:
    for name, est, measured in rows:
        ratio = measured / est if est else float("nan")
        print(f"  {name}: estimated {est:,.3g}, measured {measured:,.3g} (measured / estimated {ratio:.2f})")


def print_table(runs: list[dict]) -> None:
    figures = [per_sample(r) for r in runs]
    names = [k for k in figures[-1] if all(k in f for f in figures)]
    head = " | ".join(f"{r['rows']:,} samples" for r in runs)
    print(f"| per-sample figure | {head} | ratio |")
    print("|---|" + "---|" * (len(runs) + 1))
    for name in names:
        vals = [f[name] for f in figures]
        ratio = vals[-1] / vals[0] if vals[0] else float("nan")
        print(f"| {name} | " + " | ".join(f"{v:.3g}" for v in vals) + f" | {ratio:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline_scale")
    ap.add_argument("--samples", type=int, nargs="*", default=[20_000])
    ap.add_argument("--table", type=int, nargs="*", help="print the saved runs of these sizes side by side")
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--plan-only", type=int, metavar="N", help="`plan` before the build for the saved run of N samples")
    ap.add_argument("--print", type=int, metavar="N", help="print the saved run of N samples again")
    args = ap.parse_args()
    if args.plan_only:
        print_run(plan_only(args.plan_only, args.workers))
        return
    if args.print:
        print_run(json.loads((scale_root(args.print) / "results.json").read_text()))
        return
    if args.table:
        print_table([json.loads((scale_root(n) / "results.json").read_text()) for n in args.table])
        return
    run(args.samples, args.workers)


def run(samples: list[int], workers: int = WORKERS) -> list[dict]:
    runs = []
    for n in samples:
        runs.append(measure(n, workers))
        print_run(runs[-1])
    if len(runs) > 1:
        print_table(runs)
    return runs


if __name__ == "__main__":
    main()
