"""`run-pipeline`: the command line. Parses arguments, reads the environment, and calls the
package's public objects; it holds no pipeline logic of its own."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import json
import logging
import os
import time

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_PARTIAL = 6
EXIT_QUERY = 7

log = logging.getLogger("run_pipeline")


def _fail(code: int, message: str) -> int:
    print(f"run-pipeline: error: {message}", file=sys.stderr)
    return code


def _warehouse_root(args: argparse.Namespace) -> str:
    root = args.warehouse or os.environ.get("RUN_PIPELINE_WAREHOUSE") or "warehouse"
    return root if "://" in root else str(Path(root).absolute())


class Progress:
    """Progress bars on a terminal, plain log lines otherwise, nothing with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.done = self.rows = 0
        self.total = total
        if self.tty:
            from tqdm import tqdm

            self.runs_bar = tqdm(total=total, desc="runs", unit="run", position=0, file=sys.stderr)
            self.rows_bar = tqdm(desc="rows", unit="row", unit_scale=True, position=1, file=sys.stderr)

    def update(self, label: str, rows: int, message: str) -> None:
        self.done += 1
        self.rows += rows
        if self.tty:
            self.runs_bar.update(1)
            self.rows_bar.update(rows)
        elif not self.quiet:
            print(f"[{self.done}/{self.total}] {label}: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            self.runs_bar.close()
            self.rows_bar.close()


def _cmd_emulator(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.server import DEFAULT_API_KEY, EmulatorServer

    server = EmulatorServer(args.dataset, api_key=args.api_key or DEFAULT_API_KEY, host=args.host, port=args.port,
                            parquet_mode=args.parquet_mode, rate_limit=args.rate_limit)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(server.base_url, flush=True)
        if not args.api_key:
            print(f"api key: {DEFAULT_API_KEY} (the built-in local key; pass --api-key to choose one)", file=sys.stderr, flush=True)
        stop.wait()
    return EXIT_OK


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.hostile import generate_hostile
    from run_pipeline.emulator.sample import generate

    if args.hostile:
        hostile = generate_hostile(Path(args.dir), seed=args.seed)
        refused = sum(1 for r in hostile.runs if r.refused)
        print(f"wrote the hostile corpus: {len(hostile.runs)} runs ({hostile.history_rows} history rows; "
              f"{refused} must be refused by an exporter) to {hostile.root}")
        return EXIT_OK
    if args.messy or args.wide:
        from run_pipeline.emulator.messy import generate_shaped_run

        for shape in [s for s in ("messy", "wide") if getattr(args, s)]:
            run = generate_shaped_run(Path(args.dir) / args.entity / shape / f"{shape[:4]}run1",
                                      shape=shape, steps=args.steps, seed=args.seed)
            print(f"wrote the {shape} run {run.run_id} ({run.history_rows} history rows, {run.keys} keys) "
                  f"to {run.run_dir}")
        return EXIT_OK
    summary = generate(Path(args.dir), entity=args.entity, projects=args.projects, runs=args.runs,
                       steps=args.steps, metrics=args.metrics, seed=args.seed)
    print(f"wrote {summary.runs} runs ({summary.history_rows} history rows) in {len(summary.projects)} projects "
          f"of entity {summary.entity!r} to {summary.root}")
    return EXIT_OK


def _export(api, warehouse, targets, *, full: bool, workers: int, quiet: bool) -> tuple[list, dict]:
    """Export every FoundRun in `targets`; returns (results, failures by run path)."""
    from run_pipeline.export import export_runs

    progress = Progress(len(targets), quiet)
    results, failures = [], {}
    try:
        for outcome in export_runs(api, warehouse, targets, full=full, workers=workers):
            path, result = outcome.ref.path, outcome.result
            if result is None:
                failures[path] = outcome.error
                progress.update(path, 0, f"FAILED {outcome.error}")
                continue
            results.append(result)
            progress.update(path, result.history_rows_written, result.describe())
            if not result.reconciled:  # landed, but not all of it: never report that as success
                failures[path] = (f"{result.history_rows_total} history rows in the warehouse, "
                                  f"but the server holds {result.server_history_rows}")
    finally:
        progress.close()
    return results, failures


def _summarize(con) -> list[str]:
    lines = []
    states = con.execute("SELECT state, count(*) FROM runs GROUP BY state ORDER BY 2 DESC, 1").fetchall()
    lines.append("runs by state: " + ", ".join(f"{s} {n}" for s, n in states))
    for table in ("runs", "run_config", "run_summary", "history", "system_metrics", "metrics"):
        lines.append(f"  {table:<15} {con.execute(f'SELECT count(*) FROM {table}').fetchone()[0]:>10,} rows")
    return lines


def _cmd_demo(args: argparse.Namespace) -> int:
    from run_pipeline.client import Api
    from run_pipeline.emulator.server import EmulatorServer
    from run_pipeline.export import discover_runs
    from run_pipeline.warehouse import EXAMPLES, Warehouse

    root = _warehouse_root(args)
    warehouse = Warehouse(root)
    started = time.perf_counter()
    with EmulatorServer() as server, Api(api_key=server.api_key, base_url=server.base_url) as api:
        print(f"embedded W&B emulator at {server.base_url} serving the built-in sample dataset")
        targets = [f for p in api.projects("demo") for f in discover_runs(api, "demo", p.name)]
        results, failures = _export(api, warehouse, targets, full=False, workers=args.workers, quiet=args.quiet)
    warehouse.refresh_catalog()
    written = sum(r.history_rows_written for r in results)
    print(f"exported {len(results)} runs ({written:,} new history rows) in {time.perf_counter() - started:.1f}s")
    print(f"warehouse: {root}  (Parquet under runs/ history/ system_metrics/ run_config/ run_summary/; "
          f"DuckDB catalog {os.path.join(root, 'warehouse.duckdb')})")
    with warehouse.connect() as con:
        print("\n".join(_summarize(con)))
        demo_queries = [
            ("best_run_per_project", {"metric": "eval/acc", "maximize": True}),
            ("mean_over_last_10_percent", {"metric": "train/loss"}),
        ]
        for name, params in demo_queries:
            description, sql = EXAMPLES[name]
            print(f"\n{description}  [{', '.join(f'{k}={v}' for k, v in params.items())}]")
            print(_format_table(con.execute(sql, params), limit=8), end="")
    print(f"\nquery it yourself: run-pipeline query --warehouse {root} \"SELECT * FROM runs LIMIT 5\"")
    if failures:
        return _fail(EXIT_PARTIAL, f"{len(failures)} runs failed: {failures}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from run_pipeline.client import Api, RetryPolicy, WandbAuthError, WandbNotFoundError, WandbTransportError
    from run_pipeline.export import discover_runs
    from run_pipeline.warehouse import Warehouse, WarehouseError

    entity = args.entity or os.environ.get("WANDB_ENTITY")
    projects = args.project or [p for p in os.environ.get("WANDB_PROJECT", "").split(",") if p]
    if not projects:
        return _fail(EXIT_USAGE, "no project: pass --project P (repeatable) or set WANDB_PROJECT")
    root = _warehouse_root(args)
    doing = "looking up the key's default entity"  # named when the server cannot be reached
    try:
        warehouse = Warehouse(root)
        with Api(base_url=args.base_url or None, timeout=args.timeout,
                 retry=RetryPolicy(budget=args.retry_budget) if args.retry_budget is not None else None) as api:
            entity = entity or api.default_entity
            targets = []
            for project in projects:
                doing = f"listing the runs of {entity}/{project}"
                try:
                    api.project(project, entity)
                except WandbNotFoundError:
                    return _fail(EXIT_NOT_FOUND, f"project {entity}/{project} not found on {api.base_url} "
                                                 "(check --entity and --project)")
                targets.extend(discover_runs(api, entity, project, states=args.state, since=args.since,
                                             run_ids=args.runs))
            if not args.quiet:
                print(f"{len(targets)} runs to export from {api.base_url} into {root}", file=sys.stderr)
            doing = "exporting runs"
            results, failures = _export(api, warehouse, targets, full=args.full, workers=args.workers,
                                        quiet=args.quiet)
        warehouse.refresh_catalog() if warehouse.root.is_local else None
    except WandbAuthError as exc:
        return _fail(EXIT_AUTH, f"authentication failed: {exc} (set WANDB_API_KEY or run `wandb login`)")
    except WandbNotFoundError as exc:
        return _fail(EXIT_NOT_FOUND, str(exc))
    except WandbTransportError as exc:
        return _fail(EXIT_UNREACHABLE, f"W&B server unreachable while {doing}: {exc}")
    except WarehouseError as exc:
        return _fail(EXIT_USAGE, f"warehouse {root}: {exc}")
    written = sum(r.history_rows_written for r in results)
    if not args.quiet:
        print(f"exported {len(results)} of {len(targets)} runs, {written:,} new history rows", file=sys.stderr)
    if failures:
        lines = "\n".join(f"  {path}: {why}" for path, why in sorted(failures.items()))
        return _fail(EXIT_PARTIAL, f"{len(failures)} of {len(targets)} runs failed (re-running resumes; "
                                   f"finished runs are not fetched again):\n{lines}")
    return EXIT_OK


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _format_table(cursor, limit: int | None = None) -> str:
    columns = [d[0] for d in cursor.description]
    all_rows = cursor.fetchall()
    rows = [[_cell(v) for v in row] for row in all_rows[:limit]]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    more = f", first {len(rows)} shown" if len(rows) < len(all_rows) else ""
    out.append(f"({len(all_rows)} row{'s' if len(all_rows) != 1 else ''}{more})")
    return "\n".join(out) + "\n"


def _cmd_query(args: argparse.Namespace) -> int:
    import csv

    import duckdb

    from run_pipeline.warehouse import Warehouse, WarehouseError

    root = _warehouse_root(args)
    if "://" not in root and not os.path.exists(os.path.join(root, "warehouse.duckdb")):
        return _fail(EXIT_NOT_FOUND, f"no warehouse catalog at {root}/warehouse.duckdb (run `run-pipeline export` "
                                     "or `run-pipeline demo` first, or pass --warehouse)")
    try:
        with Warehouse(root).connect() as con:
            cursor = con.execute(args.sql)
            if args.format == "table":
                sys.stdout.write(_format_table(cursor))
            elif args.format == "csv":
                writer = csv.writer(sys.stdout)
                writer.writerow([d[0] for d in cursor.description])
                writer.writerows(cursor.fetchall())
            else:
                columns = [d[0] for d in cursor.description]
                rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
                json.dump(rows, sys.stdout, default=str, ensure_ascii=False, indent=1)
                sys.stdout.write("\n")
    except duckdb.Error as exc:
        return _fail(EXIT_QUERY, f"query failed: {exc}")
    except WarehouseError as exc:
        return _fail(EXIT_NOT_FOUND, str(exc))
    return EXIT_OK


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run-pipeline", description=(
        "Export Weights & Biases runs into Parquet and DuckDB. Run `run-pipeline demo` to try it with no account."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="export the built-in sample dataset from an embedded emulator (no account needed)",
                       description="Start an embedded W&B emulator on the built-in sample dataset, export every "
                                   "project into the warehouse, print what landed and example query answers. "
                                   "Re-running it is harmless.")
    p.add_argument("--warehouse", default=None, help="warehouse directory (default $RUN_PIPELINE_WAREHOUSE or ./warehouse)")
    p.add_argument("--workers", type=int, default=2, help="runs exported at once (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", help="export runs from a W&B server into the warehouse",
                       description="Export runs from W&B (or any W&B-compatible server) into Parquet and DuckDB. "
                                   "Incremental by default: only steps after the last exported one are fetched. "
                                   "Credentials: WANDB_API_KEY, else ~/.netrc (`wandb login`). "
                                   "Exit codes: 3 bad key, 4 unknown entity/project, 5 server unreachable, "
                                   "6 some runs failed (re-run to resume).")
    p.add_argument("--entity", default=None, help="W&B entity (default $WANDB_ENTITY, else the key's default entity)")
    p.add_argument("--project", action="append", default=None, metavar="P",
                   help="project to export; repeat for several (default $WANDB_PROJECT, comma-separated)")
    p.add_argument("--warehouse", default=None, help="warehouse directory or s3:// URI (default $RUN_PIPELINE_WAREHOUSE or ./warehouse)")
    p.add_argument("--base-url", default=None, help="W&B API URL (default $WANDB_BASE_URL or https://api.wandb.ai)")
    p.add_argument("--runs", type=_csv_list, default=None, metavar="ID,...", help="only these run ids")
    p.add_argument("--state", type=_csv_list, default=None, metavar="STATE,...", help="only runs in these states, e.g. finished,crashed")
    p.add_argument("--since", default=None, metavar="ISO", help="only runs with a heartbeat at or after this UTC time, e.g. 2026-11-01T00:00:00")
    p.add_argument("--workers", type=int, default=4, help="runs exported at once (default 4)")
    p.add_argument("--full", action="store_true", help="re-export runs whole instead of incrementally")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request (default 60)")
    p.add_argument("--retry-budget", type=float, default=None, metavar="SECONDS",
                   help="seconds one request may spend retrying (backoff, Retry-After) before its run fails, "
                        "or the export when the server cannot be reached (default: the client's, 120)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("query", help="run SQL on the warehouse's DuckDB catalog",
                       description="Run SQL over the views runs, run_config, run_summary, history, system_metrics "
                                   "and metrics, and print the result.")
    p.add_argument("sql", help="the SQL to run")
    p.add_argument("--warehouse", default=None, help="warehouse directory (default $RUN_PIPELINE_WAREHOUSE or ./warehouse)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("emulator", help="serve a local W&B-compatible API over a dataset directory",
                       description="Serve a W&B-compatible API on a loopback port. Prints the base URL on one line "
                                   "once it answers; stops on SIGINT/SIGTERM.")
    p.add_argument("--dataset", type=Path, default=None,
                   help="dataset directory to serve (writes persist there); default: a fresh copy of the built-in sample")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    p.add_argument("--api-key", default=None, help="the API key clients must send (default: a built-in local key)")
    p.add_argument("--parquet-mode", choices=("auto", "live", "parquet"), default="auto",
                   help="serve history from exported Parquet for finished runs (auto), never (live) or always (parquet)")
    p.add_argument("--rate-limit", type=int, default=None, metavar="N", help="answer 429 past N requests per second")
    p.set_defaults(func=_cmd_emulator)

    p = sub.add_parser("sample-data", help="write a deterministic sample dataset in the emulator's format",
                       description="Write a deterministic, realistic W&B-like dataset (see README, 'Dataset format').")
    p.add_argument("dir", help="directory to write into")
    p.add_argument("--entity", default="demo", help="entity name (default demo)")
    p.add_argument("--projects", type=int, default=3, help="number of projects (default 3)")
    p.add_argument("--runs", type=int, default=12, help="runs per project (default 12)")
    p.add_argument("--steps", type=int, default=500, help="largest number of steps in a run (default 500)")
    p.add_argument("--metrics", type=int, default=8, help="dense train metrics per run (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--hostile", action="store_true",
                   help="write the hostile corpus instead (odd keys, values, steps and names; a 5 MB config)")
    p.add_argument("--messy", action="store_true",
                   help="write one run of --steps rows holding every real-world value shape instead (media, "
                        "histograms, tables, nested dicts, lists, mixed types, huge ints, NaN/Infinity, odd keys)")
    p.add_argument("--wide", action="store_true",
                   help="write one run of --steps rows over 2,000 distinct keys, 50 per row, instead")
    p.set_defaults(func=_cmd_sample_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
