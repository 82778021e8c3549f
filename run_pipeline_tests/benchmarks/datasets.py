"""Benchmark datasets, written with the sample generator (`generate_run`), and the changes the
`nightly` scenario makes to a served dataset (steps appended, new runs finished)."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from run_pipeline.emulator.dataset import read_run_meta
from run_pipeline.emulator.sample import generate_run, new_run_id

ENTITY = "bench"
# Heartbeats of generated runs lie well before "now", so runs the nightly scenario touches
# (heartbeat = now) are exactly the ones a heartbeat watermark finds.
AGE = timedelta(days=40)


@dataclass(frozen=True)
class Sizes:
    long_steps: int
    long_metrics: int
    pvl_steps: int
    many_projects: int
    many_runs: int  # in total, spread over the projects
    many_steps: int
    many_metrics: int
    nightly_grown: int
    nightly_new_steps: int
    nightly_new_runs: int
    messy_steps: int
    wide_steps: int


FULL = Sizes(long_steps=200_000, long_metrics=50, pvl_steps=50_000, many_projects=3, many_runs=300,
             many_steps=2_000, many_metrics=30, nightly_grown=3, nightly_new_steps=500, nightly_new_runs=2,
             messy_steps=200_000, wide_steps=5_000)
QUICK = Sizes(long_steps=10_000, long_metrics=50, pvl_steps=5_000, many_projects=3, many_runs=30,
              many_steps=500, many_metrics=30, nightly_grown=3, nightly_new_steps=100, nightly_new_runs=2,
              messy_steps=10_000, wide_steps=1_000)


@dataclass
class RunInfo:
    project: str
    run_id: str
    state: str
    rows: int
    last_step: int

    @property
    def path(self) -> str:
        return f"{ENTITY}/{self.project}/{self.run_id}"


@dataclass
class Dataset:
    root: Path
    runs: list[RunInfo] = field(default_factory=list)
    metrics: int = 0

    @property
    def projects(self) -> list[str]:
        return sorted({r.project for r in self.runs})

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.runs)

    def history_files(self) -> list[Path]:
        return [self.root / ENTITY / r.project / r.run_id / "history.jsonl" for r in self.runs]

    def history_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.history_files())

    def describe(self) -> str:
        states: dict[str, int] = {}
        for r in self.runs:
            states[r.state] = states.get(r.state, 0) + 1
        mix = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: -kv[1]))
        return (f"{len(self.runs)} runs in {len(self.projects)} project(s), {self.rows:,} history rows, "
                f"{self.metrics} metrics/row + step/runtime/timestamp/epoch + sparse eval keys, "
                f"history.jsonl {self.history_bytes() / 2**20:,.0f} MiB ({mix})")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def single_run(root: Path, project: str, rid: str, *, steps: int, metrics: int, seed: int) -> Dataset:
    """One finished run of `steps` dense rows: `metrics` metrics plus sparse eval keys."""
    info = generate_run(root / ENTITY / project / rid, state="finished", steps=steps, metrics=metrics,
                        seed=seed, non_finite=True, created_at=_now() - AGE, seconds_per_step=1.0,
                        metadata={"display_name": f"{project}-{steps}"})
    return Dataset(root, [RunInfo(project, rid, "finished", info.history_rows, info.last_step)], metrics)


def shaped_run(root: Path, project: str, rid: str, *, shape: str, steps: int, seed: int) -> Dataset:
    """One finished run of the sample generator's `messy` or `wide` shape."""
    from run_pipeline.emulator.messy import generate_shaped_run

    run = generate_shaped_run(root / ENTITY / project / rid, shape=shape, steps=steps, seed=seed)
    return Dataset(root, [RunInfo(project, rid, "finished", run.history_rows, run.last_step)], run.keys)


def _generate_one(args: tuple) -> tuple[int, int]:
    run_dir, kwargs = args
    info = generate_run(run_dir, **kwargs)
    return info.history_rows, info.last_step


def many_runs(root: Path, sizes: Sizes, *, seed: int = 0, processes: int | None = None) -> Dataset:
    """`many_runs` runs of exactly `many_steps` rows over `many_projects` projects. One run in
    ten is still running (the nightly scenario grows those); the rest ended in a terminal
    state. About half log a string `phase` and a bool `is_best`; a quarter log NaN/Infinity."""
    rng = random.Random(f"bench:{seed}")
    base = _now() - AGE
    projects = [f"project-{i + 1}" for i in range(sizes.many_projects)]
    seen: set[str] = set()
    jobs, runs = [], []
    for k in range(sizes.many_runs):
        project = projects[k % len(projects)]
        rid = new_run_id(rng, seen)
        state = "running" if k % 10 == 3 else rng.choices(["finished", "crashed", "failed", "killed"],
                                                            weights=[85, 5, 5, 5])[0]
        kwargs = dict(state=state, steps=sizes.many_steps, metrics=sizes.many_metrics,
                      seed=rng.randrange(2**32), non_finite=rng.random() < 0.25, extras=rng.random() < 0.5,
                      created_at=base + timedelta(seconds=rng.randrange(30 * 86400)),
                      seconds_per_step=rng.uniform(0.5, 2.0), system_events=60,
                      metadata={"display_name": f"run-{k + 1}", "tags": rng.sample(["a", "b", "c"], 1)})
        jobs.append((root / ENTITY / project / rid, kwargs))
        runs.append((project, rid, state))
    with ProcessPoolExecutor(max_workers=processes or os.cpu_count() or 1) as pool:
        results = list(pool.map(_generate_one, jobs, chunksize=4))
    return Dataset(root, [RunInfo(p, r, s, rows, last) for (p, r, s), (rows, last) in zip(runs, results)],
                   sizes.many_metrics)


def heartbeat_watermark(dataset: Dataset) -> str:
    """The newest heartbeat in the dataset, as the server's DateTime text."""
    beats = [read_run_meta(dataset.root / ENTITY / r.project / r.run_id)["heartbeat_at"] for r in dataset.runs]
    return max(beats).rstrip("Z")


def _continue_rows(last: dict, count: int, rng: random.Random) -> list[dict]:
    """`count` rows after `last`, with the same keys (the sparse eval keys now and then)."""
    rows = []
    step, runtime, stamp = last["_step"], last.get("_runtime", 0.0), last.get("_timestamp", 0.0)
    dense = {k: v for k, v in last.items() if isinstance(v, float) and v == v and abs(v) != float("inf")
             and not k.startswith("_") and not k.startswith("eval/")}
    for i in range(count):
        step += 1
        runtime, stamp = round(runtime + 1.0, 3), round(stamp + 1.0, 3)
        row = {"_step": step, "_runtime": runtime, "_timestamp": stamp, "epoch": last.get("epoch", 0)}
        for k, v in dense.items():
            row[k] = round(v * (1 + 0.01 * (rng.random() - 0.5)), 5)
        if "phase" in last:
            row["phase"] = "train"
        if (i + 1) % 100 == 0:
            row["eval/loss"], row["eval/acc"] = round(rng.random(), 5), round(rng.random(), 5)
        rows.append(row)
    return rows


@dataclass
class NightlyChanges:
    grown: list[RunInfo]
    new: list[RunInfo]
    min_steps: dict[str, int]  # run path -> first new step
    new_rows: int


def apply_nightly(store, dataset: Dataset, sizes: Sizes, *, seed: int = 0) -> NightlyChanges:
    """Grow the first `nightly_grown` running runs and add `nightly_new_runs` finished runs,
    through the emulator's control API (so the served store sees them at once)."""
    rng = random.Random(f"nightly:{seed}")
    running = [r for r in dataset.runs if r.state == "running"][: sizes.nightly_grown]
    min_steps, new_rows = {}, 0
    for r in running:
        record = store.require_run(ENTITY, r.project, r.run_id)
        last = record.history.read_rows([len(record.history) - 1])[0]
        rows = _continue_rows(last, sizes.nightly_new_steps, rng)
        r.last_step = store.append_history(ENTITY, r.project, r.run_id, rows)
        r.rows += len(rows)
        min_steps[r.path] = last["_step"] + 1
        new_rows += len(rows)
    seen = {r.run_id for r in dataset.runs}
    created = []
    for i in range(sizes.nightly_new_runs):
        project = dataset.projects[i % len(dataset.projects)]
        rid = new_run_id(rng, seen)
        run_dir = dataset.root / ENTITY / project / rid
        info = generate_run(run_dir, state="finished", steps=sizes.many_steps, metrics=sizes.many_metrics,
                            seed=rng.randrange(2**32), created_at=_now() - timedelta(hours=3),
                            seconds_per_step=1.0, system_events=60, metadata={"display_name": f"new-{i + 1}"})
        store.create_run(ENTITY, project, rid, meta=read_run_meta(run_dir))
        new = RunInfo(project, rid, "finished", info.history_rows, info.last_step)
        dataset.runs.append(new)
        created.append(new)
        min_steps[new.path] = 0
        new_rows += info.history_rows
    return NightlyChanges(running, created, min_steps, new_rows)


def prewarm(store) -> tuple[int, int]:
    """Index every run's history and build the Parquet export of every run that can have one,
    so no contender pays for the emulator's lazy first touch. Returns (runs, parquet bytes)."""
    runs = list(store.runs.values())
    size = 0
    for run in runs:
        if len(run.history) and store.parquet_schema(run) is not None:
            size += store.parquet_export(run).stat().st_size
        len(run.events)
    return len(runs), size


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1))
