"""Running one contender in a child process: its own environment and temp dirs, the peak RSS
of its whole process tree (sampled with psutil), its result, and a median over repetitions."""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.02
CHILD_MODULE = "run_pipeline_tests.benchmarks.contenders"


@dataclass
class Attempt:
    seconds: float
    rows: int
    rss_mb: float
    wall: float
    graphql: int
    result: dict[str, Any]
    cpu: float = 0.0  # user+sys of the child's process tree, start-up included
    #: user+sys of this process (the emulator serving the child) meanwhile, the sampler's own excluded
    server_cpu: float = 0.0


@dataclass
class Measurement:
    scenario: str
    contender: str
    attempts: list[Attempt] = field(default_factory=list)
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(a.seconds for a in self.attempts)

    @property
    def rows(self) -> int:
        return self.attempts[0].rows if self.attempts else 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def cpu(self) -> float | None:
        values = [a.cpu for a in self.attempts if a.cpu]
        return statistics.median(values) if values else None

    @property
    def export_cpu(self) -> float | None:
        """CPU seconds of the export itself: the process tree's, less the child's start-up."""
        values = [a.cpu - float(a.result.get("startup_cpu") or 0) for a in self.attempts if a.cpu]
        return statistics.median(values) if values else None

    @property
    def server_cpu(self) -> float | None:
        values = [a.server_cpu for a in self.attempts if a.server_cpu]
        return statistics.median(values) if values else None

    @property
    def rss_mb(self) -> float | None:
        values = [a.rss_mb for a in self.attempts if a.rss_mb]
        return max(values) if values else None

    @property
    def graphql(self) -> int | None:
        values = [a.graphql for a in self.attempts if a.graphql >= 0]
        return int(statistics.median(values)) if values else None


class TreeRssSampler:
    """Peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        # Own user+sys seconds of every process seen in the tree, at its last sample: worker
        # processes a pool (or a forkserver) starts are not all reaped by the child, so the
        # kernel's children usage misses them.
        self.cpu_by_pid: dict[int, float] = {}
        self.own_cpu = 0.0  # this sampling thread's CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "TreeRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.thread_time()
        try:
            self._sample()
        finally:
            self.own_cpu = time.thread_time() - start

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            # Between fork and exec the child still maps the parent's memory: wait for exec.
            while CHILD_MODULE not in " ".join(root.cmdline()):
                if self._stop.wait(0.001):
                    return
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu_by_pid[proc.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(SAMPLE_SECONDS)


def sdk_environment(home: Path) -> dict[str, str]:
    """Temp HOME and wandb dirs: the SDK neither reads nor writes the user's settings."""
    env = {}
    for name, sub in (("HOME", "home"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DIR", "dir"),
                      ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    env.update(WANDB_SILENT="true", WANDB_ERROR_REPORTING="false", WANDB_DISABLE_CODE="true")
    return env


def _without_pandas(work: Path) -> Path:
    """A directory whose `pandas` cannot be imported, to put first on the path. run_pipeline
    does not depend on pandas; this venv has it for the SDK baseline, and pyarrow imports it
    when it can on its first conversion from Python objects (time and memory once per
    process, worker processes included). run_pipeline is measured as it is installed."""
    stub = work / "no-pandas" / "pandas"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text('raise ImportError("pandas is not installed for this contender")\n')
    return stub.parent


def run_child(spec: dict[str, Any], work: Path, *, timeout: float = 3600,
              graphql_counter=None, py_spy: Path | None = None) -> Attempt:
    """Run `contenders.py` on `spec` in a fresh interpreter; raise with its stderr on failure."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    # Credentials and targets come from the spec only, never from the caller's environment.
    env = {k: v for k, v in os.environ.items()
           if k not in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT")}
    env.update(sdk_environment(work / "env"))
    env.setdefault("PYTHONHASHSEED", "0")
    if spec["contender"] == "run_pipeline":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_without_pandas(work)), env.get("PYTHONPATH")]))
    before = graphql_counter() if graphql_counter else -1
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        command = [sys.executable, "-m", CHILD_MODULE, str(spec_path), str(result_path)]
        if py_spy is not None:
            # Wall-clock samples of every thread, idle included, as collapsed stacks.
            command = [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record",
                       "--format", "raw", "--idle", "--threads", "--rate", "200", "-o", str(py_spy), "--",
                       *command]
        proc = subprocess.Popen(command, env=env, stdout=err, stderr=err)
        with TreeRssSampler(proc.pid) as sampler:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{spec['contender']} timed out after {timeout:.0f}s")
        wall = time.perf_counter() - started
        if code != 0 or not result_path.exists():
            err.seek(0)
            tail = err.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"{spec['contender']} exited with {code}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    # The emulator serves from this process; while the child ran, the rest of it was idle.
    server_cpu = max(0.0, (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime)
                     - sampler.own_cpu)
    # Under py-spy the contender is a grandchild whose usage is not reported here.
    cpu = 0.0 if py_spy is not None else (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    # The sampled tree sees pool workers the rusage of reaped children does not (it misses at
    # most the last sampling interval of each process).
    cpu = max(cpu, sum(sampler.cpu_by_pid.values())) if py_spy is None else cpu
    result = json.loads(result_path.read_text())
    graphql = graphql_counter() - before if graphql_counter else -1
    rss = max(sampler.peak / 2**20, float(result.get("vmhwm_mb") or 0))
    return Attempt(result["seconds"], int(result["rows"]), rss, wall, graphql, result, cpu, server_cpu)
