"""One contender's export, run in a child process:
`python -m run_pipeline_tests.benchmarks.contenders SPEC.json RESULT.json`.

Imports happen before the clock starts; the result records the seconds of the export itself,
the history rows it produced and the process's own peak RSS (the parent also samples the
whole process tree, which counts helper processes such as the SDK's wandb-core).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _since_filter(since: str | None) -> dict | None:
    return {"heartbeatAt": {"$gte": since}} if since else None


def _json_cell(value):
    import json

    if value is None or isinstance(value, str) or (isinstance(value, float) and value != value):
        return None if value is None or isinstance(value, float) else value
    return json.dumps(value, default=str)


def wandb_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    """What users do today: for each run, scan_history() into a DataFrame, then to_parquet.
    The SDK has no incremental export: a changed run is read again whole."""
    import pandas as pd
    import wandb
    from pyarrow.lib import ArrowException

    out = Path(spec["out_dir"])
    # A cap on the runs read (per project) keeps the full benchmark's time bounded.
    limit = spec.get("sdk_max_runs_per_project")
    start = time.perf_counter()
    api = wandb.Api(api_key=spec["api_key"], overrides={"base_url": spec["base_url"]}, timeout=60)
    rows = runs = 0
    for project in spec["projects"]:
        for n, run in enumerate(api.runs(f"{spec['entity']}/{project}", filters=_since_filter(spec.get("since")),
                                         per_page=100)):
            if limit is not None and n >= limit:
                break
            df = pd.DataFrame(list(run.scan_history()))
            try:
                df.to_parquet(out / f"{project}__{run.id}.parquet")
            except (TypeError, ValueError, ArrowException):
                # A column pyarrow cannot convert (a key holding both 200 and "n/a", dicts of
                # varying shape): what users then do, JSON text for the object columns.
                for column in df.columns[df.dtypes == object]:
                    df[column] = df[column].map(_json_cell)
                df.to_parquet(out / f"{project}__{run.id}.parquet")
            rows += len(df)
            runs += 1
    return {"seconds": time.perf_counter() - start, "rows": rows, "runs": runs}


def wire(spec: dict[str, Any]) -> dict[str, Any]:
    from run_pipeline_tests.benchmarks.wire import requests_transport, run_plan

    post, get, close = requests_transport(spec["base_url"], spec["api_key"])
    start = time.perf_counter()
    stats = run_plan(post, get, entity=spec["entity"], projects=spec["projects"], since=spec.get("since"),
                     min_steps=spec.get("min_steps"))
    seconds = time.perf_counter() - start
    close()
    # Nothing is parsed, so the rows are the ones the scenario defines.
    return {"seconds": seconds, "rows": spec["expected_rows"], "runs": stats.runs, "bytes": stats.bytes,
            "downloads": stats.downloads}


def run_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """The export path of `run-pipeline export` (and, one run at a time, of the Dagster assets):
    discover runs, export them `workers` at a time with `export_runs` (incremental), then
    refresh the DuckDB catalog."""
    from run_pipeline.client import Api
    from run_pipeline.discovery import discover_runs
    from run_pipeline.pool import export_runs
    from run_pipeline.warehouse import Warehouse

    start = time.perf_counter()
    api = Api(api_key=spec["api_key"], base_url=spec["base_url"])
    warehouse = Warehouse(spec["out_dir"])
    found = [f for project in spec["projects"]
             for f in discover_runs(api, spec["entity"], project, since=spec.get("since"))]
    outcomes = list(export_runs(api, warehouse, found, workers=int(spec.get("workers") or 1)))
    export_seconds = time.perf_counter() - start
    warehouse.refresh_catalog()
    seconds = time.perf_counter() - start
    failed = {o.target.key.path: o.error for o in outcomes if o.result is None}
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed: {failed}")
    results = [o.result for o in outcomes]
    bad = [r.key.path for r in results if not r.reconciled]
    return {"seconds": seconds, "export_seconds": export_seconds,
            "rows": sum(r.history_rows_written for r in results), "runs": len(results),
            "modes": sorted({r.mode for r in results}), "unreconciled": bad}


def peak_rss_mb() -> float:
    """This process's own peak RSS since exec (VmHWM). Not ru_maxrss: on Linux that also counts
    the parent's image the child carried between fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CONTENDERS = {"wandb-sdk": wandb_sdk, "wire": wire, "run_pipeline": run_pipeline}


def duckdb_query(spec: dict[str, Any]) -> dict[str, Any]:
    """The README's "mean of a metric over the last 10% of steps for every run" on the
    warehouse as exported (one `metrics` file per run), then after `Warehouse.compact()` (what
    `run-pipeline compact` and the Dagster catalog asset do; timed), and the same SQL over a
    hand-written ideal layout of the same data: one long-form Parquet file sorted by key, so
    the key filter prunes row groups."""
    import duckdb

    from run_pipeline.warehouse import EXAMPLES, Warehouse

    _, sql = EXAMPLES["mean_over_last_10_percent"]
    params = {"metric": spec.get("metric", "train/loss")}
    ideal = Path(spec["ideal_dir"]) / "metrics.parquet"
    ideal.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(spec["out_dir"])

    def timed(con) -> tuple[float, list]:
        answer = con.execute(sql, params).fetchall()  # warm-up: file metadata, OS cache
        times = []
        for _ in range(15):
            start = time.perf_counter()
            con.execute(sql, params).fetchall()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2], answer

    def files() -> int:
        return sum(1 for _ in (out_dir / "metrics").rglob("*.parquet")) + \
            sum(1 for _ in (out_dir / "metrics_packs").rglob("*.parquet"))

    warehouse = Warehouse(out_dir)
    warehouse.refresh_catalog()  # the views hold absolute paths, and the harness moved the directory
    with warehouse.connect() as con:
        loose_seconds, loose_answer = timed(con)
        points = con.execute("SELECT count(*) FROM metrics").fetchone()[0]
        con.execute(f"COPY (SELECT entity, project, run_id, step, CAST(key AS VARCHAR) AS key, value FROM metrics "
                    f"ORDER BY key, entity, project, run_id, step) TO '{ideal}' "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
    loose_files = files()
    cpu, wall = time.process_time(), time.perf_counter()
    packed = warehouse.compact()
    compact_cpu, compact_seconds = time.process_time() - cpu, time.perf_counter() - wall
    with warehouse.connect() as con:
        warehouse_seconds, answer = timed(con)
        packed_points = con.execute("SELECT count(*) FROM metrics").fetchone()[0]
    if packed_points != points or not _same_answer(answer, loose_answer):
        raise SystemExit("the compacted warehouse answers differently from the one exported")
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{ideal}')")
        ideal_seconds, ideal_answer = timed(con)
    return {"seconds": warehouse_seconds, "ideal_seconds": ideal_seconds, "rows": len(answer),
            "ideal_rows": len(ideal_answer), "points": points, "files": files(),
            "loose_seconds": loose_seconds, "loose_files": loose_files,
            "compact_seconds": compact_seconds, "compact_cpu": compact_cpu,
            "packed_runs": sum(r.runs for r in packed)}


def _same_answer(a: list, b: list) -> bool:
    """Rows equal, floats to 1e-9 (a mean's last bits depend on the order values are summed)."""
    import math

    return len(a) == len(b) and all(
        len(x) == len(y) and all(math.isclose(u, v, rel_tol=1e-9) if isinstance(u, float) else u == v
                                 for u, v in zip(x, y)) for x, y in zip(a, b))


def library_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """`floor.py` on a warehouse run_pipeline exported and, for live pages, the runs' history."""
    from run_pipeline_tests.benchmarks.floor import parse_floor, write_floor

    write_cpu, files = write_floor(spec["out_dir"])
    parse_cpu = parse_floor(spec.get("history") or [])
    return {"seconds": write_cpu + parse_cpu, "rows": files, "write_cpu": write_cpu, "files": files,
            "parse_cpu": parse_cpu}


JOBS = {**CONTENDERS, "duckdb-query": duckdb_query, "library-floor": library_floor}
# Imported before the clock (and the profiler) starts.
PRELOAD = {"wandb-sdk": ("pandas", "pyarrow.parquet", "wandb"), "wire": ("requests",),
           "run_pipeline": ("run_pipeline.client", "run_pipeline.export", "run_pipeline.warehouse", "duckdb"),
           "duckdb-query": ("duckdb", "run_pipeline.warehouse"),
           "library-floor": ("orjson", "pyarrow.json", "pyarrow.parquet", "run_pipeline.warehouse")}


def main(argv: list[str]) -> int:
    import importlib

    spec = json.loads(Path(argv[0]).read_text())
    for module in PRELOAD.get(spec["contender"], ()):
        importlib.import_module(module)
    # CPU spent starting up (interpreter and imports), so the export's own CPU can be told apart.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    startup_cpu = usage.ru_utime + usage.ru_stime
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(JOBS[spec["contender"]], spec)
        pstats.Stats(profiler).dump_stats(spec["profile"])
    else:
        result = JOBS[spec["contender"]](spec)
    result["vmhwm_mb"] = peak_rss_mb()
    result["startup_cpu"] = startup_cpu
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    # The SDK writes into these; keep it away from the user's home and settings.
    os.environ.setdefault("WANDB_SILENT", "true")
    sys.exit(main(sys.argv[1:]))
