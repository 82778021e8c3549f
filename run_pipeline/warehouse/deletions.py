"""Runs deleted on the server. W&B deletes softly and can restore a run for days, so a deletion
only marks the run (one small `run_deletions` file: the time it was seen gone) and keeps every
row; the `runs` view shows it as `deleted_at`. A later export of the run removes the mark.
`prune` removes the files of runs marked before a given time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .layout import RUN_DELETIONS, RUNS, RunKey, WarehouseRoot, decode_partition_value
from .lock import run_lock
from .parquet import Stage, delete_file, write_table_file

DELETED_FILE = "deleted.parquet"
DELETIONS_SCHEMA = pa.schema([("deleted_at", pa.timestamp("us", tz="UTC"))])


def _path(root: WarehouseRoot, table: str, run: RunKey, name: str) -> str:
    return f"{root.run_dir(table, run)}/{name}"


def is_exported(root: WarehouseRoot, run: RunKey) -> bool:
    """Whether the run has a row in `runs`."""
    from .export import RUN_FILES  # the metadata writer owns the file names

    info = root.fs.get_file_info(_path(root, RUNS, run, RUN_FILES[RUNS]))
    return info.type == pafs.FileType.File


def deleted_at(root: WarehouseRoot, run: RunKey) -> datetime | None:
    """When the run was marked deleted, or None."""
    try:
        table = pq.read_table(_path(root, RUN_DELETIONS, run, DELETED_FILE), filesystem=root.fs)
    except (FileNotFoundError, OSError):
        return None
    values = table.column("deleted_at").to_pylist()
    return values[0] if values else None


def mark_deleted(root: WarehouseRoot, run: RunKey, when: datetime | None = None) -> datetime | None:
    """Mark an exported run deleted (its files stay); returns the mark's time, the earlier one
    when it was marked before, None when the run was never exported (nothing to mark)."""
    with run_lock(root, run):
        if not is_exported(root, run):
            return None
        earlier = deleted_at(root, run)
        if earlier is not None:
            return earlier
        when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
        with Stage(root, RUN_DELETIONS, run) as stage:
            write_table_file(stage, RUN_DELETIONS, DELETED_FILE,
                             pa.table({"deleted_at": [when]}, schema=DELETIONS_SCHEMA))
            stage.place(RUN_DELETIONS, DELETED_FILE, _path(root, RUN_DELETIONS, run, DELETED_FILE))
        return when


def clear_deleted(root: WarehouseRoot, run: RunKey) -> None:
    """Remove the run's deletion mark (it exists again on the server). Caller holds the lock."""
    path = _path(root, RUN_DELETIONS, run, DELETED_FILE)
    if root.fs.get_file_info(path).type == pafs.FileType.File:
        delete_file(root.fs, path)
        directory = root.run_dir(RUN_DELETIONS, run)
        try:
            root.fs.delete_dir(directory)
        except OSError:
            pass


def iter_deleted(root: WarehouseRoot) -> Iterator[tuple[RunKey, datetime]]:
    """Every run marked deleted, with the time of its mark."""
    base = root.path(RUN_DELETIONS)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in root.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name != DELETED_FILE:
            continue
        components = info.path[len(base) + 1:].split("/")[:-1]
        if len(components) != 3 or not all("=" in c for c in components):
            continue
        run = RunKey(*(decode_partition_value(c.split("=", 1)[1]) for c in components))
        when = deleted_at(root, run)
        if when is not None:
            yield run, when


def exported_run_ids(root: WarehouseRoot, entity: str, project: str) -> set[str]:
    """Ids of the runs of one project that have a row in `runs`."""
    base = root.path(RUNS, *RunKey(entity, project, "x").components()[:2])
    infos = root.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return {decode_partition_value(i.base_name.split("=", 1)[1]) for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("run_id=")}
