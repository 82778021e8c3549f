"""What the benchmark prints: the machine, and the results as a Markdown table that pastes
into the README."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path

from .measure import Measurement

BASELINE, WIRE, SERVE = "wandb-sdk", "wire", "serve-only"
PACKAGES = ("wandb", "pandas", "pyarrow", "requests", "duckdb", "orjson", "graphql-core", "starlette", "uvicorn")


def load_average() -> tuple[float, ...]:
    return os.getloadavg() if hasattr(os, "getloadavg") else ()


def file_creation_ms(directory: Path, runs: int = 100) -> float:
    """Milliseconds (median of three rounds) to create what a small run's export creates per
    table under `directory`: a run's directory in a hive tree and one 4 KB file in it, after
    removing the previous round's tree, as a re-export does. On some virtual disks this costs
    far more, and varies far more between minutes, than the CPU figures suggest, and a many-runs
    export creates about 15 directories and files a run."""
    root = directory / "file-creation-probe"
    rounds = []
    for _ in range(3):
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        for i in range(runs):
            run_dir = root / "t" / "entity=e" / f"project=p{i % 3}" / f"run_id=r{i}"
            run_dir.mkdir(parents=True)
            (run_dir / "part.parquet").write_bytes(b"x" * 4096)
        rounds.append((time.perf_counter() - started) / runs * 1000)
    shutil.rmtree(root, ignore_errors=True)
    return statistics.median(rounds)


def machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")) / 2**20
        memory = f"{mem:.0f} GiB RAM"
    except (OSError, StopIteration):
        memory = "RAM unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip()
        rev = f"{rev}{' (uncommitted changes)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    load = " / ".join(f"{x:.1f}" for x in load_average()) or "?"
    return [
        f"CPU: {cpu}, {usable} usable cores (of {os.cpu_count()}), {memory}",
        f"OS: {platform.platform()}; Python {platform.python_version()} ({platform.python_implementation()})",
        "Versions: " + ", ".join(versions),
        f"run_pipeline: git {rev}",
        f"Load average at start (1/5/15 min): {load}",
    ]


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def table(measurements: list[Measurement]) -> str:
    """One Markdown table: per scenario, each contender's median seconds and rows/s, its peak
    RSS, its speed relative to the SDK and as a fraction of the wire's."""
    head = ["scenario", "contender", "rows", "seconds", "rows/s", "CPU s", "peak RSS MB", "× SDK", "of wire",
            "GraphQL req"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|"]
    by_scenario: dict[str, dict[str, Measurement]] = {}
    for m in measurements:
        by_scenario.setdefault(m.scenario, {})[m.contender] = m
    for scenario, group in by_scenario.items():
        base, wire = group.get(BASELINE), group.get(WIRE)
        for name, m in group.items():
            if not m.attempts:
                continue
            rate = m.rows_per_second
            ratio = f"{rate / base.rows_per_second:.1f}×" if base and base.attempts and name != BASELINE else (
                "1.0×" if name == BASELINE else "")
            of_wire = f"{rate / wire.rows_per_second:.0%}" if wire and wire.attempts else ""
            if name == SERVE:
                ratio, of_wire = "", f"({rate / wire.rows_per_second:.1f}× wire)" if wire and wire.attempts else ""
            rss = f"{m.rss_mb:,.0f}" if m.rss_mb else "–"
            cpu = f"{m.cpu:,.1f}" if m.cpu else "–"
            graphql = f"{m.graphql:,}" if m.graphql is not None else "–"
            label = name + (f" {m.note}" if m.note else "")
            lines.append(f"| {scenario} | {label} | {m.rows:,} | {m.seconds:,.2f} | {_fmt_rate(rate)} | {cpu} | {rss} | "
                         f"{ratio} | {of_wire} | {graphql} |")
    return "\n".join(lines)


def py_spy_summary(path: Path, top: int = 15) -> str:
    """Top frames by own wall-clock samples, per thread group, from py-spy's raw output."""
    import collections
    import re

    groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    strip = re.compile(r"\s*\((?:/[^()]*?/site-packages/|/[^()]*?/python3\.\d+/|/[^()]*?/(?=run_pipeline))")
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "prefetch threads" if "prefetch" in frames[0] else (
            "main thread" if "MainThread" in frames[0] else "other threads")
        groups[thread][strip.sub(" (", frames[-1])] += int(count)
        totals[thread] += int(count)
    out = [f"py-spy, {path.name} (share of each thread group's wall-clock samples, idle included):"]
    for thread, counter in sorted(groups.items(), key=lambda kv: -totals[kv[0]]):
        out.append(f"  {thread}: {totals[thread]} samples")
        out += [f"    {n / totals[thread]:6.1%}  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)
