"""The `run-pipeline` argument parser: every flag, its check and its help."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from run_pipeline.settings import COMPACT_MIN_RUNS

from . import checks
from .codes import EXIT_USAGE, exit_code_table
from .compacting import cmd_compact
from .exporting import DEFAULT_WORKERS, cmd_demo, cmd_export
from .local import cmd_emulator, cmd_sample_data
from .pruning import cmd_prune, deleted_before
from .querying import cmd_query, param


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag or value reported on one line (usage stays under --help)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        command = self.prog.split(" ", 1)[1] if " " in self.prog else None
        hint = f"run-pipeline {command} --help" if command else "run-pipeline --help"
        self.exit(EXIT_USAGE, f"run-pipeline: error: {message} (see {hint})\n")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("run_pipeline")
    except PackageNotFoundError:
        return "unknown"


def entity_name(text: str) -> str:
    if not text or text.startswith(".") or re.search(r"[/\\\x00]", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an entity name (no slashes, not starting with '.')")
    return text


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    epilog = exit_code_table()
    parser = Parser(prog="run-pipeline", formatter_class=fmt, epilog=epilog, description=(
        "Export Weights & Biases runs into Parquet and DuckDB. Run `run-pipeline demo` to try it with no account.\n"
        "Settings come from flags, then the environment, then .env in the working directory."))
    parser.add_argument("--version", action="version", version=f"run-pipeline {version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an unexpected error")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=fmt,
                              parents=[common])

    warehouse_help = "warehouse directory or s3://bucket/prefix (default $RUN_PIPELINE_WAREHOUSE or ./warehouse)"
    workers_help = (f"runs exported at once (default {DEFAULT_WORKERS}): worker processes when there are at "
                    "least 4 runs per worker, else threads")

    p = command("demo", "export the built-in sample dataset from an embedded emulator (no account needed)",
                "Start an embedded W&B emulator on the built-in sample dataset, export every project into the "
                "warehouse, and print what landed, example answers and what to try next. Re-running it is harmless.")
    p.add_argument("--warehouse", default=None, help=warehouse_help)
    p.add_argument("--workers", type=checks.whole_number(1), default=DEFAULT_WORKERS, metavar="N", help=workers_help)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_demo)

    p = command("export", "export runs from a W&B server into the warehouse",
                "Export runs from W&B (or any W&B-compatible server) into Parquet and DuckDB. Incremental: only "
                "steps after the last exported one are fetched.\nCredentials: WANDB_API_KEY, else ~/.netrc "
                "(`wandb login`). Ctrl-C stops cleanly; re-running resumes.")
    p.add_argument("--entity", default=None, help="W&B entity (default $WANDB_ENTITY, else the key's default entity)")
    p.add_argument("--project", type=checks.names, action="extend", default=None, metavar="P[,P...]",
                   help="projects, comma-separated or repeated (default $WANDB_PROJECT; neither: every project "
                        "of the entity)")
    p.add_argument("--warehouse", default=None, help=warehouse_help)
    p.add_argument("--base-url", default=None, metavar="URL",
                   help="W&B API URL with http(s):// (default $WANDB_BASE_URL or https://api.wandb.ai)")
    p.add_argument("--runs", type=checks.names, default=None, metavar="ID[,ID...]", help="only these run ids")
    p.add_argument("--state", type=checks.states, default=None, metavar="STATE[,STATE...]",
                   help="only runs in these states: finished, running, crashed, failed, killed, preempted, pending")
    p.add_argument("--since", type=checks.iso_time, default=None, metavar="ISO8601",
                   help="only runs with a heartbeat at or after this time, e.g. 2026-11-01 or 2026-11-01T08:00:00Z "
                        "(no offset: UTC)")
    p.add_argument("--workers", type=checks.whole_number(1), default=DEFAULT_WORKERS, metavar="N", help=workers_help)
    p.add_argument("--full", action="store_true", help="re-export runs whole instead of incrementally")
    p.add_argument("--timeout", type=checks.seconds(allow_zero=False), default=60.0, metavar="SECONDS",
                   help="seconds per HTTP request, more than 0 (default 60)")
    p.add_argument("--retry-budget", type=checks.seconds(allow_zero=True), default=None, metavar="SECONDS",
                   help="seconds one request may spend retrying a server that answered before (backoff, "
                        "Retry-After), 0 or more (default 120)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_export)

    p = command("query", "run SQL on the warehouse's DuckDB views",
                "Run SQL over the views runs, run_config, run_summary, history, system_metrics and metrics.\n"
                "The SQL comes from the argument, --file FILE (- for standard input) or --example NAME.")
    p.add_argument("sql", nargs="?", default=None, help="the SQL to run")
    p.add_argument("--file", default=None, metavar="FILE", help="read the SQL from FILE (- for standard input)")
    p.add_argument("--example", default=None, metavar="NAME", help="run a named example; `--example list` lists them")
    p.add_argument("--param", type=param, action="append", default=None, metavar="KEY=VALUE",
                   help="a parameter of the --example (repeatable)")
    p.add_argument("--warehouse", default=None, help=warehouse_help)
    p.add_argument("--format", choices=("table", "csv", "json", "jsonl", "parquet"), default="table",
                   help="table (fits the terminal), csv, json (one array), jsonl (one object a line) or parquet "
                        "(needs --output)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the result to FILE instead of the screen")
    p.set_defaults(func=cmd_query)

    p = command("emulator", "serve a local W&B-compatible API over a dataset directory",
                "Serve a W&B-compatible API on a loopback port. Prints the base URL on one line once it answers; "
                "stops on SIGINT/SIGTERM.")
    p.add_argument("--dataset", type=Path, default=None, metavar="DIR",
                   help="an existing dataset directory to serve (writes persist there); default: a fresh copy of "
                        "the built-in sample, deleted on exit")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=checks.port, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    p.add_argument("--api-key", default=None, help="the API key clients must send (default: a built-in local key)")
    p.add_argument("--parquet-mode", choices=("auto", "live", "parquet"), default="auto",
                   help="serve history from exported Parquet for finished runs (auto), never (live) or always (parquet)")
    p.add_argument("--rate-limit", type=checks.whole_number(1), default=None, metavar="N",
                   help="answer 429 past N requests per second")
    p.add_argument("--profile", action="append", default=None, metavar="NAME",
                   help="behave like the real W&B server in one more way (repeatable): parquet-only, delayed-export, "
                        "exclusive-maxstep, empty-pages, viewer-null, lagging-filters, crash-no-heartbeat")
    p.add_argument("--profile-option", action="append", default=None, metavar="NAME=SECONDS",
                   help="a profile option (repeatable): export_delay_seconds, filter_lag_seconds (default 2 each)")
    p.set_defaults(func=cmd_emulator)

    p = command("prune", "remove the files of runs deleted on the server before a time",
                "Runs deleted on the server stay in the warehouse, marked deleted (runs.deleted_at), since W&B can "
                "restore them. This removes every file of the runs marked deleted before --deleted-before, one run "
                "at a time and atomically, then refreshes the catalog.")
    p.add_argument("--deleted-before", type=deleted_before, required=True, metavar="ISO",
                   help="remove runs marked deleted before this time (UTC unless a zone is given)")
    p.add_argument("--warehouse", default=None, help=warehouse_help)
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--dagster-partitions", action="store_true",
                   help="also delete their partitions from the Dagster instance in $DAGSTER_HOME")
    p.set_defaults(func=cmd_prune)

    p = command("compact", "pack finished runs' long-form metrics into a few files per project",
                "The metrics view reads one file per exported run; a query across many runs pays for each. This "
                "moves the long form of runs in a final state (finished, crashed, failed, killed, preempted) into a "
                "few files per project, sorted by key, atomically (the view's rows stay the same), then refreshes "
                "the catalog. Runs an export holds at that moment are left for the next time. Harmless to repeat.")
    p.add_argument("--warehouse", default=None, help=warehouse_help)
    p.add_argument("--entity", default=None, help="only this entity (default $WANDB_ENTITY; neither: every entity)")
    p.add_argument("--project", type=checks.names, action="extend", default=None, metavar="P[,P...]",
                   help="only these projects, comma-separated or repeated (default: every project)")
    p.add_argument("--min-runs", type=checks.whole_number(1), default=COMPACT_MIN_RUNS, metavar="N",
                   help=f"write a pack only when at least N runs of a project qualify (default {COMPACT_MIN_RUNS})")
    p.set_defaults(func=cmd_compact)

    p = command("sample-data", "write a deterministic sample dataset in the emulator's format",
                "Write a deterministic, realistic W&B-like dataset (see README, 'Dataset format').")
    p.add_argument("dir", help="directory to write into (created if missing)")
    p.add_argument("--entity", type=entity_name, default="demo", help="entity name (default demo)")
    p.add_argument("--projects", type=checks.whole_number(1), default=3, help="number of projects (default 3)")
    p.add_argument("--runs", type=checks.whole_number(1), default=12, help="runs per project (default 12)")
    p.add_argument("--steps", type=checks.whole_number(1), default=500, help="largest number of steps in a run (default 500)")
    p.add_argument("--metrics", type=checks.whole_number(1), default=8, help="dense train metrics per run (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--hostile", action="store_true",
                   help="write the hostile corpus instead (odd keys, values, steps and names; a 5 MB config)")
    p.add_argument("--messy", action="store_true",
                   help="write one run of --steps rows holding every real-world value shape instead (media, "
                        "histograms, tables, nested dicts, lists, mixed types, huge ints, NaN/Infinity, odd keys)")
    p.add_argument("--wide", action="store_true",
                   help="write one run of --steps rows over 2,000 distinct keys, 50 per row, instead")
    p.set_defaults(func=cmd_sample_data)
    return parser


