"""What the warehouse holds of its exported runs: the state and heartbeat each run of a project
was last exported with, read in one pass (what the nightly refresh compares the server's
listing with), one run's state, and the projects it holds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .export import RUN_FILES
from .layout import RUNS, RunKey, WarehouseRoot, decode_partition_value
from .schema import RUNS_SCHEMA

_RUN_ID = "run_id"
# The two columns read, and the run id from each file's directory (left encoded, decoded here).
_STATUS_SCHEMA = pa.schema([RUNS_SCHEMA.field("state"), RUNS_SCHEMA.field("heartbeat_at"), (_RUN_ID, pa.string())])


def exported_states(root: WarehouseRoot, entity: str, project: str) -> dict[str, tuple[str | None, str]]:
    """Run id → (state, heartbeat as ISO text to the second, "" when none) of every run of the
    project with a row in `runs`.

    One recursive listing of the project's `runs` directory, then one multi-threaded scan of
    two columns of the `run.parquet` files it found: no per-run lookup, however many runs.
    """
    base = root.path(RUNS, *RunKey(entity, project, "x").components()[:2])
    partitioning = ds.HivePartitioning(pa.schema([(_RUN_ID, pa.string())]), segment_encoding="none")
    try:
        dataset = ds.dataset(base, schema=_STATUS_SCHEMA, format="parquet", filesystem=root.fs,
                             partitioning=partitioning)
    except FileNotFoundError:
        return {}
    files = [f for f in dataset.files if f.rsplit("/", 1)[-1] == RUN_FILES[RUNS]]
    if len(files) != len(dataset.files):  # anything else under the runs directories is not a run's row
        dataset = ds.dataset(files, schema=_STATUS_SCHEMA, format="parquet", filesystem=root.fs,
                             partitioning=partitioning, partition_base_dir=base)
    out: dict[str, tuple[str | None, str]] = {}
    for row in dataset.to_table().to_pylist():
        hb = row["heartbeat_at"]
        out[decode_partition_value(row[_RUN_ID])] = (row["state"], hb.strftime("%Y-%m-%dT%H:%M:%S") if hb else "")
    return out


def exported_state(root: WarehouseRoot, run: RunKey) -> str | None:
    """The W&B state a run was last exported with (None: no `runs` row)."""
    try:
        with root.fs.open_input_file(f"{root.run_dir(RUNS, run)}/{RUN_FILES[RUNS]}") as f:
            values = pq.read_table(f, columns=["state"]).column("state").to_pylist()
    except FileNotFoundError:
        return None
    return values[0] if values else None


def projects(root: WarehouseRoot) -> list[tuple[str, str]]:
    """Every (entity, project) with a run in the warehouse."""
    out = []
    for e in root.fs.get_file_info(pafs.FileSelector(root.path(RUNS), allow_not_found=True)):
        if e.type != pafs.FileType.Directory or not e.base_name.startswith("entity="):
            continue
        for p in root.fs.get_file_info(pafs.FileSelector(e.path)):
            if p.type == pafs.FileType.Directory and p.base_name.startswith("project="):
                out.append((decode_partition_value(e.base_name.split("=", 1)[1]),
                            decode_partition_value(p.base_name.split("=", 1)[1])))
    return sorted(out)
