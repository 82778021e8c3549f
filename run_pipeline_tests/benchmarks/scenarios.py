"""The scenarios: each one's dataset, served by the emulator, and every contender run on it
(see `__main__` for the command line and the report)."""

from __future__ import annotations

import argparse
import collections
import math
import shutil
import sys
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from run_pipeline.emulator.server import EmulatorServer

from . import datasets, report
from .datasets import ENTITY, Dataset
from .measure import Attempt, Measurement, run_child
from .wire import InProcessTransport, run_plan

SCENARIOS = ("long-run", "parquet-vs-live", "messy", "wide", "many-runs", "nightly")
CONTENDERS = ("wandb-sdk", "wire", "run_pipeline")
API_KEY = "benchmark" + "0" * 31
#: Without --sdk-max-runs, the full run caps the SDK at this many many-runs runs (10%).
FULL_SDK_MAX_RUNS = 30


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RequestCounter:
    """ASGI middleware in front of the emulator's routes, counting requests by first path part."""

    def __init__(self, inner):
        self.inner = inner
        self.counts: collections.Counter = collections.Counter()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.counts[scope["path"].split("/")[1]] += 1
        await self.inner(scope, receive, send)

    def graphql(self) -> int:
        return self.counts["graphql"]


class Emulator:
    """The emulator over a dataset directory, with request counting and warm caches."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.server = EmulatorServer(dataset.root, api_key=API_KEY, parquet_mode="live")
        self.counter = RequestCounter(self.server.app.starlette)
        self.server.app.starlette = self.counter
        self.parquet_bytes = 0

    def __enter__(self) -> "Emulator":
        self.server.start()
        self.prewarm()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def prewarm(self) -> None:
        started = time.perf_counter()
        runs, self.parquet_bytes = datasets.prewarm(self.server.store)
        log(f"  emulator indexed {runs} runs and built their Parquet exports "
            f"({self.parquet_bytes / 2**20:,.0f} MiB) in {time.perf_counter() - started:.1f}s")


def _in_place(base: Path, out: Path) -> None:
    """Last night's warehouse at `out`, its catalog refreshed there (views name absolute paths),
    as a warehouse that stays where it is would be before tonight's export."""
    from run_pipeline.warehouse import Warehouse

    shutil.copytree(base, out, dirs_exist_ok=True)
    Warehouse(out).refresh_catalog()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.reps = args.reps or (1 if args.quick else 3)
        self.sdk_reps = args.sdk_reps or (self.reps if args.quick else 1)
        self.sdk_max_runs = args.sdk_max_runs if args.sdk_max_runs is not None else (
            None if args.quick else FULL_SDK_MAX_RUNS)
        self.sizes = datasets.QUICK if args.quick else datasets.FULL
        self.results: list[Measurement] = []
        self.datasets: list[str] = []
        self.facts: dict[str, object] = {}
        self.profiles: list[str] = []
        self.spy_files: list[Path] = []

    # -- running contenders ------------------------------------------------------------------
    def measure(self, label: str, contender: str, emu: Emulator, *, projects: list[str], expected_rows: int,
                since: str | None = None, min_steps: dict | None = None, prepare=None, keep: Path | None = None,
                rows_basis: str = "own", workers: int | None = None, sdk_cap: int | None = None,
                floor_history: list[str] | None = None) -> Measurement:
        """Run one contender `reps` times. With `floor_history` (the runs' history.jsonl files
        for live pages, [] for exported Parquet), run_pipeline's first warehouse is also
        measured for the library floor (`floor.py`)."""
        workers = workers or self.args.workers
        name = contender if workers == 1 or contender != "run_pipeline" else f"{contender} ({workers} workers)"
        m = Measurement(label, name)
        reps = self.sdk_reps if contender == "wandb-sdk" else self.reps
        for i in range(reps):
            slug = f"{label.replace(' · ', '-')}-{name.replace(' ', '')}-{i}"
            work = self.tmp / "work" / slug
            out = work / "out"
            out.mkdir(parents=True)
            if prepare:
                prepare(out)
            spec = {"contender": contender, "base_url": emu.server.base_url, "api_key": API_KEY,
                    "entity": ENTITY, "projects": projects, "since": since, "min_steps": min_steps or {},
                    "out_dir": str(out), "expected_rows": expected_rows, "workers": workers}
            if contender == "wandb-sdk" and sdk_cap:
                spec["sdk_max_runs_per_project"] = math.ceil(sdk_cap / len(projects))
            if self.args.profile and contender == "run_pipeline" and i == 0:
                spec["profile"] = str(self.tmp / f"profile-{slug}.pstats")
                self.profiles.append(spec["profile"])
            spy = None
            if self.args.py_spy and contender == "run_pipeline" and i == 0:
                self.args.py_spy.mkdir(parents=True, exist_ok=True)
                spy = self.args.py_spy / f"{slug}.txt"
                self.spy_files.append(spy)
            attempt = run_child(spec, work, graphql_counter=emu.counter.graphql, py_spy=spy)
            extra = attempt.result
            if rows_basis == "expected":
                attempt.rows = expected_rows
            elif contender == "run_pipeline" and attempt.rows != expected_rows:
                log(f"  !! {name} wrote {attempt.rows:,} rows, the scenario has {expected_rows:,}")
            if extra.get("unreconciled"):
                log(f"  !! {name}: runs not reconciled: {extra['unreconciled'][:5]}")
            m.attempts.append(attempt)
            if contender == "run_pipeline" and i == 0 and floor_history is not None:
                self.library_floor(label, out, work, floor_history)
            read = f", SDK read {extra['rows']:,} rows" if rows_basis == "expected" and contender == "wandb-sdk" else ""
            log(f"  [{label}] {name} #{i + 1}: {attempt.seconds:,.2f}s, {attempt.rows:,} rows "
                f"({attempt.rows / attempt.seconds:,.0f}/s), peak RSS {attempt.rss_mb:,.0f} MB, "
                f"{attempt.graphql} GraphQL requests, process wall {attempt.wall:.1f}s, CPU {attempt.cpu:.1f}s, "
                f"emulator CPU {attempt.server_cpu:.1f}s{read}")
            if keep is not None and i == reps - 1:
                shutil.move(str(out), keep)
            else:
                shutil.rmtree(out, ignore_errors=True)
        if contender == "wandb-sdk" and sdk_cap:
            m.note = f"(first {sdk_cap} runs)"
        self.results.append(m)
        return m

    def library_floor(self, label: str, out: Path, work: Path, history: list[str]) -> None:
        a = run_child({"contender": "library-floor", "out_dir": str(out), "history": history}, work / "floor")
        self.facts[f"floor:{label}"] = a.result
        log(f"  [{label}] library floor: parsing {a.result['parse_cpu']:.2f} CPU-s, writing the "
            f"{a.result['files']:,} Parquet files again {a.result['write_cpu']:.2f} CPU-s")

    def serve_only(self, label: str, emu: Emulator, *, projects: list[str], expected_rows: int,
                   since: str | None = None, min_steps: dict | None = None) -> Measurement:
        m = Measurement(label, report.SERVE)
        transport = InProcessTransport(emu.server.app, emu.server.base_url, API_KEY)
        try:
            for _ in range(self.reps):
                before = emu.counter.graphql()
                started = time.perf_counter()
                stats = run_plan(transport.post, transport.get, entity=ENTITY, projects=projects, since=since,
                                 min_steps=min_steps)
                seconds = time.perf_counter() - started
                m.attempts.append(Attempt(seconds, expected_rows, 0.0, seconds, emu.counter.graphql() - before,
                                          asdict(stats)))
        finally:
            transport.close()
        log(f"  [{label}] emulator serve-only (in-process ASGI, no sockets): {m.seconds:.2f}s, "
            f"{m.rows_per_second:,.0f} rows/s")
        self.results.append(m)
        return m

    def contenders(self, label: str, emu: Emulator, *, keep_warehouse: Path | None = None,
                   sdk_cap: int | None = None, floor_of: Dataset | None = None, **kw) -> dict[str, Measurement]:
        out = {}
        for contender in self.args.contenders:
            extra: dict = {"keep": keep_warehouse} if contender == "run_pipeline" else {}
            if contender == "run_pipeline" and floor_of is not None:
                extra["floor_history"] = ([str(f) for f in floor_of.history_files()]
                                          if label.endswith("· live") else [])
            if contender == "wandb-sdk":
                extra["sdk_cap"] = sdk_cap
            out[contender] = self.measure(label, contender, emu, **kw, **extra)
        if "wire" in self.args.contenders:
            plan = {k: v for k, v in kw.items() if k in ("projects", "expected_rows", "since", "min_steps")}
            out["serve-only"] = self.serve_only(label, emu, **plan)
        return out

    def dataset_line(self, name: str, ds: Dataset, emu: Emulator) -> None:
        line = f"{name}: {ds.describe()}; exported Parquet {emu.parquet_bytes / 2**20:,.0f} MiB"
        self.datasets.append(line)
        log(line)

    # -- scenarios -----------------------------------------------------------------------------
    def each_mode(self, name: str, emu: Emulator, ds: Dataset, project: str, modes: tuple[str, ...]) -> None:
        """Every contender on the one-run dataset, served in each Parquet mode in turn."""
        for mode in modes:
            emu.server.set_parquet_mode(mode)
            found = self.contenders(f"{name} · {mode}", emu, projects=[project], expected_rows=ds.rows,
                                    floor_of=ds)
            rp = found.get("run_pipeline")
            if rp:
                self.facts[f"rss:{name}:{mode}"] = (ds.rows, rp.rss_mb)

    def single_run_scenario(self, name: str, project: str, rid: str, steps: int, modes: tuple[str, ...]) -> None:
        log(f"{name}: generating one run of {steps:,} steps")
        started = time.perf_counter()
        ds = datasets.single_run(self.tmp / name, project, rid, steps=steps, metrics=self.sizes.long_metrics,
                                 seed=steps)
        log(f"  generated in {time.perf_counter() - started:.1f}s")
        with Emulator(ds) as emu:
            self.dataset_line(name, ds, emu)
            self.each_mode(name, emu, ds, project, modes)

    def shaped_run_scenario(self, shape: str, steps: int, modes: tuple[str, ...]) -> None:
        log(f"{shape}: generating one run of {steps:,} steps")
        started = time.perf_counter()
        ds = datasets.shaped_run(self.tmp / shape, shape, f"{shape[:4]}run1", shape=shape, steps=steps, seed=steps)
        log(f"  generated in {time.perf_counter() - started:.1f}s")
        with Emulator(ds) as emu:
            what = ("media objects (sha256 hex), histograms, tables, nested dicts, a list column, a key of both 200 "
                    "and \"n/a\", an int counter past 2**60, NaN/±Infinity, bools, strings, unicode/quote/dot/slash "
                    "keys, sparse eval keys, late and rare keys" if shape == "messy" else
                    "50 of 2,000 per-layer keys per row")
            line = (f"{shape}: 1 run, {ds.rows:,} history rows, {ds.metrics:,} distinct keys ({what}), history.jsonl "
                    f"{ds.history_bytes() / 2**20:,.0f} MiB; emulator Parquet export {emu.parquet_bytes / 2**20:,.1f} MiB "
                    f"in W&B's export types (structs, lists, `_type_<kind>` unions)")
            self.datasets.append(line)
            log(line)
            self.each_mode(shape, emu, ds, shape, modes)

    def many_runs_scenarios(self, run_many: bool, run_nightly: bool) -> None:
        sizes = self.sizes
        log(f"many-runs: generating {sizes.many_runs} runs × {sizes.many_steps:,} steps × "
            f"{sizes.many_metrics} metrics")
        started = time.perf_counter()
        ds = datasets.many_runs(self.tmp / "many-runs", sizes)
        log(f"  generated in {time.perf_counter() - started:.1f}s")
        with Emulator(ds) as emu:
            self.dataset_line("many-runs", ds, emu)
            if run_many:
                warehouse = self.tmp / "many-runs-warehouse"
                for mode in ("live", "parquet"):
                    emu.server.set_parquet_mode(mode)
                    label = f"many-runs · {mode}"
                    self.contenders(label, emu, projects=ds.projects, expected_rows=ds.rows,
                                    sdk_cap=self.sdk_max_runs, floor_of=ds,
                                    keep_warehouse=warehouse if mode == "parquet" else None)
                    if "run_pipeline" in self.args.contenders and self.args.threads > 1:
                        self.measure(label, "run_pipeline", emu, projects=ds.projects, expected_rows=ds.rows,
                                     workers=self.args.threads)
                if warehouse.exists():
                    self.duckdb_check(warehouse)
            if run_nightly:
                self.nightly(emu, ds)

    def duckdb_check(self, warehouse: Path) -> None:
        log("many-runs: DuckDB 'mean over the last 10% of steps' on the warehouse vs an ideal layout")
        a = run_child({"contender": "duckdb-query", "out_dir": str(warehouse),
                       "ideal_dir": str(self.tmp / "ideal-layout"), "metric": "train/loss"},
                      self.tmp / "work" / "duckdb-query")
        r = a.result
        self.facts["duckdb"] = r
        log(f"  warehouse as exported {r['loose_seconds'] * 1000:.0f} ms ({r['loose_files']} files), compacted "
            f"{r['seconds'] * 1000:.0f} ms ({r['files']} files; compaction {r['compact_seconds']:.2f}s, "
            f"{r['compact_cpu']:.2f} CPU-s for {r['packed_runs']} runs), ideal layout "
            f"{r['ideal_seconds'] * 1000:.0f} ms ({r['rows']} runs, {r['points']:,} metric points)")

    def nightly(self, emu: Emulator, ds: Dataset) -> None:
        emu.server.set_parquet_mode("auto")
        base = self.tmp / "nightly-base-warehouse"
        base.mkdir()
        log("nightly: first export of many-runs by run_pipeline (parquet_mode=auto), not in the table")
        before = emu.counter.graphql()
        first = run_child({"contender": "run_pipeline", "base_url": emu.server.base_url, "api_key": API_KEY,
                           "entity": ENTITY, "projects": ds.projects, "out_dir": str(base),
                           "workers": self.args.workers}, self.tmp / "work" / "nightly-first",
                          graphql_counter=emu.counter.graphql)
        log(f"  first export: {first.seconds:.2f}s, {first.rows:,} rows, {emu.counter.graphql() - before} GraphQL "
            f"requests, peak RSS {first.rss_mb:.0f} MB")
        watermark = datasets.heartbeat_watermark(ds)
        since = (datetime.fromisoformat(watermark) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        changes = datasets.apply_nightly(emu.server.store, ds, self.sizes)
        emu.prewarm()
        line = (f"nightly: after a first export of many-runs, {len(changes.grown)} running runs gain "
                f"{self.sizes.nightly_new_steps:,} steps each and {len(changes.new)} new runs of "
                f"{self.sizes.many_steps:,} steps finish: {changes.new_rows:,} new rows. Changed runs are found "
                f"by heartbeat ≥ the first export's newest heartbeat (parquet_mode=auto: finished runs as "
                f"Parquet, running runs live)")
        self.datasets.append(line)
        log(line)
        found = self.contenders("nightly · auto", emu, projects=ds.projects, expected_rows=changes.new_rows,
                                since=since, min_steps=changes.min_steps, rows_basis="expected",
                                prepare=lambda out: _in_place(base, out))
        rp = found.get("run_pipeline")
        if rp:
            self.facts["nightly"] = {"first_seconds": first.seconds, "first_rows": first.rows,
                                     "nightly_seconds": rp.seconds, "graphql": rp.graphql,
                                     "listing_pages": len(ds.projects),
                                     "changed_runs": len(changes.grown) + len(changes.new)}

    def run(self) -> None:
        chosen = self.args.scenario
        if "long-run" in chosen:
            self.single_run_scenario("long-run", "long-run", "longrun1", self.sizes.long_steps, ("live", "parquet"))
        if "parquet-vs-live" in chosen:
            self.single_run_scenario("parquet-vs-live", "parquet-vs-live", "pvlrun01", self.sizes.pvl_steps,
                                     ("parquet", "live"))
        if "messy" in chosen:
            self.shaped_run_scenario("messy", self.sizes.messy_steps, ("live", "parquet"))
        if "wide" in chosen:
            self.shaped_run_scenario("wide", self.sizes.wide_steps, ("live", "parquet"))
        if "many-runs" in chosen or "nightly" in chosen:
            self.many_runs_scenarios("many-runs" in chosen, "nightly" in chosen)
