"""What the warehouse holds for one run, read back: whether its files are there, how many steps
repeat, the last rows (for the Dagster checks and metadata), and the state it was exported in
(for the nightly refresh)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .export import RUN_FILES
from .layout import HISTORY, RUNS, RunKey, WarehouseRoot


@dataclass(frozen=True)
class RunInspection:
    """What the asset checks and materialization metadata look at for one exported run."""

    missing_files: list[str]
    duplicate_steps: int
    preview_markdown: str


def inspect_run(root: WarehouseRoot, key: RunKey, preview_rows: int = 5, preview_columns: int = 6) -> RunInspection:
    """Check one exported run's files: its runs/run_config/run_summary files exist, how many
    `_step` values repeat in its history, and a small preview of the last rows."""
    missing = []
    for table, name in RUN_FILES.items():
        path = f"{root.run_dir(table, key)}/{name}"
        if root.fs.get_file_info(path).type != pafs.FileType.File:
            missing.append(f"{table}/{name}")
    history_dir = root.run_dir(HISTORY, key)
    if root.fs.get_file_info(history_dir).type != pafs.FileType.Directory:
        return RunInspection(missing, 0, "(no history)")
    data = ds.dataset(history_dir, filesystem=root.fs, format="parquet", exclude_invalid_files=True)
    if "_step" not in data.schema.names:  # a run that logged no history
        return RunInspection(missing, 0, "(no history)")
    steps = data.to_table(columns=["_step"]).column("_step")
    duplicates = len(steps) - pc.count_distinct(steps).as_py() if len(steps) else 0
    names = [n for n in data.schema.names if n not in ("entity", "project", "run_id")][:preview_columns]
    table = data.to_table(columns=names)
    tail = table.slice(max(0, table.num_rows - preview_rows))
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in tail.to_pylist():
        lines.append("| " + " | ".join("" if row[n] is None else f"{row[n]:.6g}" if isinstance(row[n], float)
                                       else str(row[n])[:40] for n in names) + " |")
    return RunInspection(missing, duplicates, "\n".join(lines))


def exported_status(root: WarehouseRoot, key: RunKey) -> tuple[str, str] | None:
    """(state, heartbeat ISO text) of the run as last exported, or None if never exported."""
    path = f"{root.run_dir(RUNS, key)}/{RUN_FILES[RUNS]}"
    if root.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    row = pq.read_table(path, filesystem=root.fs, columns=["state", "heartbeat_at"]).to_pylist()[0]
    hb = row["heartbeat_at"]
    return row["state"], hb.strftime("%Y-%m-%dT%H:%M:%S") if hb is not None else ""
