"""What `run-pipeline demo` prints: what was exported, real answers from the warehouse, and
the next three things to try. Narrow lines; no URL of the emulator, which is gone by then."""

from __future__ import annotations

import os
import shlex
import shutil
import textwrap

from run_pipeline.settings import DEFAULT_WAREHOUSE

from .output import format_table

WIDTH = 100
#: The answers the demo shows: example name, rows shown.
SHOWN = (("best_run_per_project", 5), ("mean_over_last_10_percent", 5), ("config_differences", 3))
TABLES = ("runs", "run_config", "run_summary", "history", "system_metrics", "metrics")


def print_guide(warehouse, root: str, projects: list[str], tally, seconds: float) -> None:
    from run_pipeline.warehouse import EXAMPLES

    width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    # Shown relative to the working directory when under it: shorter, and pastes as it is.
    inside = "://" not in root and os.path.commonpath([root, os.getcwd()]) == os.getcwd()
    shown = os.path.relpath(root) if inside else root
    # The default warehouse needs no flag at all.
    default = shown == DEFAULT_WAREHOUSE and not os.environ.get("RUN_PIPELINE_WAREHOUSE")
    flag = "" if default else f" --warehouse {shlex.quote(shown)}"
    wrap = lambda text: textwrap.fill(text, width, subsequent_indent="  ", break_on_hyphens=False)  # noqa: E731
    out = [wrap(f"Exported the built-in sample dataset ({len(projects)} projects: {', '.join(projects)}) from an "
                f"embedded W&B emulator in {seconds:.1f}s: {tally.line()}."), "", f"Warehouse {root}"]
    with warehouse.connect() as con:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        states = con.execute("SELECT state, count(*) FROM runs GROUP BY state ORDER BY 2 DESC, 1").fetchall()
        for table in TABLES:
            out.append(f"  {table:<15}{counts[table]:>10,} rows")
        out.append(wrap("  runs by state: " + ", ".join(f"{s} {n}" for s, n in states)))
        out.append("  Parquet files under each table's directory; DuckDB views in warehouse.duckdb")
        for name, limit in SHOWN:
            example = EXAMPLES[name]
            cursor = con.execute(example.sql, example.params)
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            out += ["", wrap(f"{example.describe()}  [--example {name}]"),
                    format_table(columns, rows, limit=limit, width=width).rstrip("\n")]
    out += ["",
            wrap("The runs' url column points at the embedded emulator, which stopped with this command."),
            "", "Next:",
            "  1. Query the warehouse (SQL, or a named example; --format csv|jsonl|parquet):",
            f"       run-pipeline query{flag} --example list",
            f"       run-pipeline query{flag} \"SELECT state, count(*) FROM runs GROUP BY state\"",
            "  2. Export your own runs from W&B (or a self-hosted server: --base-url):",
            "       export WANDB_API_KEY=...        # or `wandb login`",
            f"       run-pipeline export --entity ENTITY --project PROJECT{flag}",
            "  3. Open Dagster (from the repository: sensors, schedules, backfills):",
            "       mkdir -p ~/dagster_home && export DAGSTER_HOME=~/dagster_home",
            "       dagster dev -w workspace.yaml   # then http://127.0.0.1:3000"]
    print("\n".join(out))
