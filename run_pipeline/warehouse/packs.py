"""Metrics packs: the long-form `metrics` rows of many finished runs of one project in one
Parquet file, sorted by key, so that a query filtering on a key reads a few files instead of
one per run (`compaction.py` decides what goes into one).

Layout: `metrics_packs/entity=E/project=P/pack-<id>.parquet` with the columns run_id, step,
key and value (entity and project come from the directories, as for every table), rows sorted
by key, run_id and step, in row groups of `ROW_GROUP_ROWS`; the footer's key-value metadata
`run_pipeline.runs` lists the run ids it holds (JSON). A run's manifest names, per part, the
pack holding the part's long form (`PartInfo.pack`); such a part has no file under `metrics/`.

A pack is written under `_staging/packs/<project token>/` first (on an object store it is
uploaded there, so it outlives the process), and promoted into `metrics_packs/` (a rename, or
a server-side copy) once every run it holds names it in its manifest and has lost its own
`metrics` files. Removing a run from a pack (the run is replaced or deleted) writes the pack
again without it under the same name: one atomic replace, so readers see the run's rows go
and every other run's rows stay. Whoever writes a pack file holds the project's packs lock
(`lock.packs_lock`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import WarehouseError
from .layout import (
    METRICS_PACKS,
    PARQUET_SUFFIX,
    STAGING,
    RunKey,
    WarehouseRoot,
    project_token,
)
from .lock import packs_lock
from .parquet import delete_file, list_files

PACKS_STAGING = "packs"
PACK_PREFIX = "pack-"
#: Footer key-value metadata: the JSON list of the run ids a pack holds.
RUNS_METADATA = "run_pipeline.runs"
#: Rows per row group, DuckDB's default: a key's rows of a project span a few row groups, whose
#: statistics let a key filter skip the rest.
ROW_GROUP_ROWS = 122_880
#: What a pack is written with: memory DuckDB may use before it spills the sort to disk.
MEMORY_LIMIT = "128MB"


def pack_dir(root: WarehouseRoot, entity: str, project: str) -> str:
    return root.project_dir(METRICS_PACKS, entity, project)


def pending_dir(root: WarehouseRoot, entity: str, project: str) -> str:
    return root.path(STAGING, PACKS_STAGING, project_token(entity, project))


def new_pack_name() -> str:
    return f"{PACK_PREFIX}{uuid.uuid4().hex}{PARQUET_SUFFIX}"


def _names(fs: pafs.FileSystem, directory: str) -> list[str]:
    return [n for n in list_files(fs, directory) if n.startswith(PACK_PREFIX) and n.endswith(PARQUET_SUFFIX)]


def committed_packs(root: WarehouseRoot, entity: str, project: str) -> list[str]:
    """Names of the project's packs that the views read."""
    return _names(root.fs, pack_dir(root, entity, project))


def pending_packs(root: WarehouseRoot, entity: str, project: str) -> list[str]:
    """Names of the project's packs written but not yet promoted (a compaction was cut short)."""
    return _names(root.fs, pending_dir(root, entity, project))


def pack_runs(root: WarehouseRoot, path: str) -> list[str]:
    """The run ids a pack file holds, from its footer."""
    with root.fs.open_input_file(path) as f:
        metadata = pq.read_metadata(f).metadata or {}
    return json.loads(metadata.get(RUNS_METADATA.encode(), b"[]").decode("utf-8"))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def duckdb_connection(scratch: str) -> Iterator:
    """A DuckDB connection for writing packs: bounded memory, spilling into `scratch`."""
    import duckdb  # here, not at module level: exporting never needs it

    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": os.path.join(scratch, "spill")})
    try:
        con.execute("SET enable_progress_bar = false")
        yield con
    finally:
        con.close()


def write_pack(con, sources: list[str], out_path: str, runs: list[str], *, base: list[str] = (),
               order: bool = True, where: str = "", label: str = "") -> int:
    """Write a pack to `out_path` from local Parquet files: `sources`, runs' own `metrics`
    files (columns step, key, value) in `run_id=<encoded id>` directories, and `base`, packs
    (run_id a column). `runs` are the run ids it will hold. Returns its rows."""
    import duckdb

    scans = []
    if sources:
        scans.append("SELECT run_id, step, CAST(key AS VARCHAR) AS key, value FROM read_parquet("
                     f"{_list(sources)}, hive_partitioning = true, hive_types_autocast = false, "
                     "hive_types = {'run_id': 'VARCHAR'})")
    if base:
        scans.append(f"SELECT run_id, step, CAST(key AS VARCHAR) AS key, value FROM read_parquet({_list(base)})")
    query = f"SELECT * FROM ({' UNION ALL '.join(scans)}) {where}" + (" ORDER BY key, run_id, step" if order else "")
    metadata = json.dumps(sorted(runs), ensure_ascii=True)
    try:
        # A sort needs no insertion order (keeping it costs memory); a filtered copy keeps it.
        con.execute(f"SET preserve_insertion_order = {'false' if order else 'true'}")
        con.execute(f"COPY ({query}) TO {_literal(out_path)} (FORMAT parquet, COMPRESSION zstd, "
                    f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}, KV_METADATA {{{_literal(RUNS_METADATA)}: {_literal(metadata)}}})")
    except duckdb.Error as exc:  # a full disk, a file that is not Parquet: nothing was changed
        raise WarehouseError(f"{label}: writing a metrics pack of {len(runs)} runs failed, nothing was changed: "
                             f"{str(exc).splitlines()[0]}") from exc
    return pq.read_metadata(out_path).num_rows


def _list(paths: list[str]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"


class Scratch:
    """A local directory for one pack operation, and the pack files' way in and out of the
    root's filesystem (a rename on a local root, an upload then a server-side copy on an
    object store)."""

    def __init__(self, root: WarehouseRoot, entity: str, project: str):
        self.root = root
        self.pending = pending_dir(root, entity, project)
        if root.is_local:
            os.makedirs(self.pending, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix="scratch-", dir=self.pending)
        else:
            self.dir = tempfile.mkdtemp(prefix="run_pipeline-pack-")

    def local(self, path: str) -> str:
        """A local path to read the file `path` of the root from (a download on object stores,
        into a directory of the same name as the file's, so a `run_id=` directory stays one)."""
        if self.root.is_local:
            return path
        parent = os.path.join(self.dir, uuid.uuid4().hex, path.rsplit("/", 2)[-2])
        os.makedirs(parent)
        target = os.path.join(parent, os.path.basename(path))
        pafs.copy_files(path, target, source_filesystem=self.root.fs, destination_filesystem=pafs.LocalFileSystem())
        return target

    def new_file(self, name: str) -> str:
        return os.path.join(self.dir, f"{uuid.uuid4().hex}-{name}")

    def make_pending(self, local_path: str, name: str) -> str:
        """Keep a written pack under `_staging/packs/` until it is promoted; returns its path."""
        path = f"{self.pending}/{name}"
        self._put(local_path, path)
        return path

    def replace(self, local_path: str, final_path: str) -> None:
        """Put a written file at `final_path` of the root in one atomic step."""
        self._put(local_path, final_path)

    def _put(self, local_path: str, path: str) -> None:
        if not self.root.is_local:
            # Never stream to the final key: upload beside it, then copy on the server.
            staged = f"{self.pending}/upload-{uuid.uuid4().hex}{PARQUET_SUFFIX}"
            pafs.copy_files(local_path, staged, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.root.fs)
            local_path = staged
        _move(self.root, local_path, path)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def promote(root: WarehouseRoot, entity: str, project: str, name: str) -> None:
    """Make a pending pack visible to the views (one rename or server-side copy)."""
    _move(root, f"{pending_dir(root, entity, project)}/{name}", f"{pack_dir(root, entity, project)}/{name}")


def _move(root: WarehouseRoot, source: str, target: str) -> None:
    """Put the file `source` at `target` on the root's filesystem in one step: a rename, or
    a server-side copy on an object store."""
    if root.is_local:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)
    else:
        root.fs.move(source, target)


def remove_runs(root: WarehouseRoot, entity: str, project: str, path: str, run_ids: Iterable[str]) -> int:
    """Write the pack at `path` again without the rows of `run_ids`, under the same name (or
    delete it when no run is left); the caller holds the packs lock. Returns the rows left."""
    held = pack_runs(root, path)
    gone = set(run_ids) & set(held)
    if not gone:
        return -1
    left = [r for r in held if r not in gone]
    if not left:
        delete_file(root.fs, path)
        return 0
    with Scratch(root, entity, project) as scratch, duckdb_connection(scratch.dir) as con:
        source = scratch.local(path)
        out = scratch.new_file(os.path.basename(path))
        excluded = ", ".join(_literal(r) for r in sorted(gone))
        # Rows stay in the pack's order (DuckDB keeps insertion order), so no sort is needed.
        rows = write_pack(con, [], out, left, base=[source], order=False, where=f"WHERE run_id NOT IN ({excluded})",
                          label=f"{entity}/{project}")
        scratch.replace(out, path)
    return rows


def remove_run(root: WarehouseRoot, run: RunKey, names: Iterable[str] | None = None) -> None:
    """Take a run's rows out of the project's packs, committed or pending: those in `names`,
    or every one that lists it (None). Holds the packs lock; the caller holds the run's."""
    with packs_lock(root, run.entity, run.project):
        wanted = None if names is None else set(names)
        for directory in (pack_dir(root, run.entity, run.project), pending_dir(root, run.entity, run.project)):
            for name in _names(root.fs, directory):
                if wanted is None or name in wanted:
                    remove_runs(root, run.entity, run.project, f"{directory}/{name}", [run.run_id])
