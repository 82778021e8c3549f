"""The DuckDB catalog: views over the warehouse's Parquet files.

Views read `<table>/*/*/*/*.parquet` with hive partitioning (entity, project and run_id are
taken from the directory names, which DuckDB URL-decodes back to the original values and uses
to prune files) and `union_by_name` (so runs with different keys and new runs appear without a
refresh). A history key typed differently in different runs is promoted by DuckDB: BIGINT with
DOUBLE gives DOUBLE, BOOLEAN with BIGINT gives BIGINT, and any type with VARCHAR gives VARCHAR
(numbers read back as text such as '1.5'). JSON-valued keys are VARCHAR holding JSON text
(`col::JSON` to query them); they are not DuckDB JSON columns because DuckDB refuses to union a
JSON column with a VARCHAR one.

`refresh_catalog` is the only writer of `<root>/warehouse.duckdb` and replaces it atomically. It
is only needed to create the views the first time and to turn a table's empty placeholder view
into a real one once its first file exists; calling it again is harmless.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from . import catalog_file
from .errors import WarehouseCatalogError
from .layout import (
    HISTORY,
    METRICS,
    METRICS_PACKS,
    PARQUET_SUFFIX,
    RUN_CONFIG,
    RUN_DELETIONS,
    RUN_SUMMARY,
    RUNS,
    SYSTEM_METRICS,
    TABLES,
    WarehouseRoot,
)

if TYPE_CHECKING:
    import duckdb

_IDS = "entity, project, run_id"
_KEY_VALUE_COLUMNS = f"{_IDS}, key, CAST(value AS JSON) AS value, value_double, value_text"
_PROJECTIONS = {
    RUNS: (f"{_IDS}, name, state, created_at, heartbeat_at, tags, notes, run_group, job_type, username, "
           "url, CAST(config AS JSON) AS config, CAST(summary AS JSON) AS summary, "
           "CAST(system_metrics AS JSON) AS system_metrics, history_line_count, last_step, exported_at"),
    RUN_CONFIG: _KEY_VALUE_COLUMNS,
    RUN_SUMMARY: _KEY_VALUE_COLUMNS,
    HISTORY: f"{_IDS}, _step, * EXCLUDE ({_IDS}, _step)",
    SYSTEM_METRICS: f"{_IDS}, _timestamp, _runtime, * EXCLUDE ({_IDS}, _timestamp, _runtime)",
    METRICS: f"{_IDS}, step, key, value",
}
_ID_TYPES = [("entity", "VARCHAR"), ("project", "VARCHAR"), ("run_id", "VARCHAR")]
_KEY_VALUE_TYPES = [*_ID_TYPES, ("key", "VARCHAR"), ("value", "JSON"), ("value_double", "DOUBLE"),
                    ("value_text", "VARCHAR")]
#: Column types of each view while its table has no file yet.
EMPTY_COLUMNS = {
    RUNS: [*_ID_TYPES, ("name", "VARCHAR"), ("state", "VARCHAR"), ("created_at", "TIMESTAMP"),
           ("heartbeat_at", "TIMESTAMP"), ("tags", "VARCHAR[]"), ("notes", "VARCHAR"),
           ("run_group", "VARCHAR"), ("job_type", "VARCHAR"), ("username", "VARCHAR"), ("url", "VARCHAR"),
           ("config", "JSON"), ("summary", "JSON"), ("system_metrics", "JSON"),
           ("history_line_count", "BIGINT"), ("last_step", "BIGINT"), ("exported_at", "TIMESTAMP"),
           ("deleted_at", "TIMESTAMP")],
    RUN_CONFIG: _KEY_VALUE_TYPES,
    RUN_SUMMARY: _KEY_VALUE_TYPES,
    HISTORY: [*_ID_TYPES, ("_step", "BIGINT")],
    SYSTEM_METRICS: [*_ID_TYPES, ("_timestamp", "DOUBLE"), ("_runtime", "DOUBLE")],
    METRICS: [*_ID_TYPES, ("step", "BIGINT"), ("key", "VARCHAR"), ("value", "DOUBLE")],
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_parquet_sql(root: WarehouseRoot, table: str) -> str:
    # Runs log different keys, so files are unioned by column name; every `metrics` file has
    # the same three columns, so its scans skip the name matching.
    by_name = "" if table == METRICS else "union_by_name = true, "
    return (f"read_parquet({_literal(root.glob(table))}, hive_partitioning = true, {by_name}"
            "hive_types_autocast = false, "
            "hive_types = {'entity': 'VARCHAR', 'project': 'VARCHAR', 'run_id': 'VARCHAR'})")


def view_sql(root: WarehouseRoot, table: str, *, empty: bool = False, deletions: bool = False) -> str:
    """`CREATE OR REPLACE VIEW` for one table; `empty` gives the typed placeholder. The `runs`
    view adds `deleted_at` from the deletion marks (`deletions`: some exist)."""
    if empty:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in EMPTY_COLUMNS[table])
        return f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} WHERE false"
    select = f"SELECT {_PROJECTIONS[table]} FROM {read_parquet_sql(root, table)}"
    if table == METRICS:
        select = _metrics_select(root)
    if table == RUNS:
        if deletions:
            marks = f"SELECT {_IDS}, CAST(deleted_at AS TIMESTAMP) AS deleted_at FROM {read_parquet_sql(root, RUN_DELETIONS)}"
            select = f"SELECT r.*, d.deleted_at FROM ({select}) r LEFT JOIN ({marks}) d USING ({_IDS})"
        else:
            select = f"SELECT *, CAST(NULL AS TIMESTAMP) AS deleted_at FROM ({select})"
    return f"CREATE OR REPLACE VIEW {table} AS {select}"


def _metrics_select(root: WarehouseRoot) -> str:
    """The `metrics` rows: runs' own files, and the packs of finished runs (`packs.py`), whose
    run id is a column instead of a directory. Each source only once it has a file: DuckDB
    fails on a glob that matches nothing."""
    selects = []
    if _any_file(root, METRICS):
        selects.append(f"SELECT {_PROJECTIONS[METRICS]} FROM {read_parquet_sql(root, METRICS)}")
    if _any_file(root, METRICS_PACKS):
        packs = (f"read_parquet({_literal(f'{root.uri}/{METRICS_PACKS}/*/*/*{PARQUET_SUFFIX}')}, "
                 "hive_partitioning = true, hive_types_autocast = false, "
                 "hive_types = {'entity': 'VARCHAR', 'project': 'VARCHAR'})")
        selects.append(f"SELECT {_PROJECTIONS[METRICS]} FROM {packs}")
    return " UNION ALL ".join(selects)


def has_files(root: WarehouseRoot, table: str) -> bool:
    """Whether the table has at least one committed Parquet file (stops at the first); for
    `metrics`, in runs' own files or in packs."""
    if table == METRICS:
        return _any_file(root, METRICS) or _any_file(root, METRICS_PACKS)
    return _any_file(root, table)


def _any_file(root: WarehouseRoot, table: str) -> bool:
    depth = 2 if table == METRICS_PACKS else 3
    return next(_parquet_files(root.fs, root.path(table), depth=depth), None) is not None


def _parquet_files(fs: pafs.FileSystem, directory: str, depth: int) -> Iterator[str]:
    for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        if depth == 0:
            if info.type == pafs.FileType.File and info.base_name.endswith(PARQUET_SUFFIX):
                yield info.path
        elif info.type == pafs.FileType.Directory and "=" in info.base_name:
            yield from _parquet_files(fs, info.path, depth - 1)


def view_statements(root: str | os.PathLike | WarehouseRoot, *,
                    filesystem: pafs.FileSystem | None = None) -> list[str]:
    """The `CREATE OR REPLACE VIEW` statements for every table of a root, local or not
    (an `s3://` root gives `s3://` globs: run them in DuckDB with httpfs loaded)."""
    wr = WarehouseRoot.parse(root, filesystem)
    return _statements(wr, _empty_tables(wr))


def _empty_tables(root: WarehouseRoot) -> set[str]:
    return {table for table in TABLES if not has_files(root, table)}


def _statements(root: WarehouseRoot, empty: set[str]) -> list[str]:
    deletions = has_files(root, RUN_DELETIONS)
    return [view_sql(root, table, empty=table in empty, deletions=deletions) for table in TABLES]


def refresh_catalog(root: str | os.PathLike | WarehouseRoot, *, filesystem: pafs.FileSystem | None = None,
                    database: str | os.PathLike | None = None, force: bool = False) -> dict:
    """(Re)create every view in `<root>/warehouse.duckdb` (or `database`); idempotent.

    The views read their tables by glob, so new runs, parts and keys need no refresh; the views
    change only when a table gains its first file or the root moves. When the catalog already
    holds exactly the views this refresh would write (a stamp beside it says so), it is left as
    it is (`catalog: unchanged`) unless `force`: a nightly refresh of a large warehouse then
    costs a directory listing instead of opening every Parquet footer.

    The catalog is built in a temporary file next to it, checkpointed, reopened and verified
    (every view present with the columns it was created with), and only then renamed over it,
    so a refresh that cannot write it (a full disk) raises `WarehouseCatalogError` and leaves
    the previous catalog in place; the stamp is written only for a verified catalog, and a
    catalog found without its views is rebuilt whatever its stamp says. It is renamed over, so
    a refresh never waits for (or breaks) a reader that has the old catalog open, and
    concurrent refreshes cannot corrupt it. The file holds these views only: anything else
    stored in it is lost.
    Returns figures for a materialization: the database path, the views, the tables still
    empty, the number of runs, whether the catalog was rebuilt, and the seconds it took.
    """
    started = time.monotonic()
    wr = WarehouseRoot.parse(root, filesystem)
    if database is None:
        if not wr.is_local:
            raise WarehouseCatalogError("a non-local root needs an explicit local `database` path")
        wr.fs.create_dir(wr.base, recursive=True)
        database = wr.catalog_path()
    database = os.fspath(database)
    catalog_file.remove_stale_temporaries(database)
    empty = _empty_tables(wr)
    statements = _statements(wr, empty)
    stamp = hashlib.sha256("\n".join(statements).encode("utf-8")).hexdigest()
    info = {"database": database, "views": ", ".join(TABLES),
            "empty_tables": ", ".join(t for t in TABLES if t in empty)}
    current = catalog_file.identity(database, stamp)
    if (not force and current is not None and catalog_file.read_stamp(database) == current
            and _holds_views(database)):
        runs = sum(1 for _ in _parquet_files(wr.fs, wr.path(RUNS), depth=3))
        return {**info, "runs": runs, "catalog": "unchanged", "seconds": round(time.monotonic() - started, 3)}

    import duckdb  # here, not at module level: exporting never needs it

    catalog_file.write_stamp(database, None)
    temporary = f"{database}.{uuid.uuid4().hex}.tmp"
    try:
        con = duckdb.connect(temporary)
        try:
            for sql in statements:
                con.execute(sql)  # binds the view: its files are read and its columns known
            written = _stored_views(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # DuckDB's close() does not report a checkpoint it could not write (a full disk, a
        # file size limit): the file can then hold no view at all. Prove it holds every one.
        _verify(duckdb, temporary, written)
        runs = sum(1 for _ in _parquet_files(wr.fs, wr.path(RUNS), depth=3))
        # The stamp names this very file (a rename keeps inode and mtime), so when two
        # refreshes race, the stamp of the one whose file lost never matches the catalog.
        identity = catalog_file.identity(temporary, stamp)
        os.replace(temporary, database)
    except (duckdb.Error, OSError) as exc:
        raise WarehouseCatalogError(f"refreshing {database} failed: {exc}") from exc
    finally:
        for leftover in (temporary, temporary + ".wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
    try:
        catalog_file.write_stamp(database, identity)
    except OSError:  # no stamp: the next refresh rebuilds rather than trusting this one
        catalog_file.write_stamp(database, None)
    return {**info, "runs": int(runs), "catalog": "rebuilt", "seconds": round(time.monotonic() - started, 3)}


def _stored_views(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    """Each view's columns (name, type) as the catalog stores them (no file is read)."""
    views: dict[str, list[tuple[str, str]]] = {name: [] for (name,) in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    for view, column, dtype in con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal "
            "ORDER BY table_name, column_index").fetchall():
        if view in views:
            views[view].append((column, dtype))
    return views


def _verify(duckdb, path: str, written: dict[str, list[tuple[str, str]]]) -> None:
    """Open a freshly written catalog read-only and check that it holds every view with the
    columns it was `written` with (each was bound when created; binding again would read
    every Parquet footer once more). Raises `WarehouseCatalogError` naming what is missing."""
    con = duckdb.connect(path, read_only=True)
    try:
        stored = _stored_views(con)
    finally:
        con.close()
    missing = [t for t in TABLES if t not in stored]
    if missing:
        raise WarehouseCatalogError(
            f"the new catalog {path} holds no view {', '.join(missing)} (was the disk full?)")
    changed = [t for t in TABLES if stored[t] != written.get(t)]
    if changed:
        raise WarehouseCatalogError(
            f"the new catalog {path} holds view {', '.join(changed)} with other columns than written")


def _holds_views(database: str) -> bool:
    """Whether the catalog file still names every view (cheap: no Parquet file is read)."""
    import duckdb

    try:
        con = duckdb.connect(database, read_only=True)
    except duckdb.Error:
        return False
    try:
        views = {name for (name,) in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    except duckdb.Error:
        return False
    finally:
        con.close()
    return all(t in views for t in TABLES)


def connect(root: str | os.PathLike | WarehouseRoot, *, filesystem: pafs.FileSystem | None = None,
            s3_secret: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the warehouse views.

    Local root: the catalog file opened read-only (created first if missing). Other roots:
    an in-memory database reading `s3://` through s3fs (see `s3_filesystem`; no DuckDB
    extension, nothing downloaded), `s3_secret` its credentials and endpoint (key_id, secret,
    session_token, region, endpoint, use_ssl; none: botocore's usual chain), and the views
    created from `view_statements`.
    Either way the connection keeps Parquet footers it has read in memory
    (`parquet_metadata_cache`): a query over many runs' files then skips re-parsing them.
    """
    import duckdb

    wr = WarehouseRoot.parse(root, filesystem)
    if wr.is_local:
        if not os.path.exists(wr.catalog_path()):
            refresh_catalog(wr)
        con = duckdb.connect(wr.catalog_path(), read_only=True)
        if not _reads_this_root(con, wr):
            # The warehouse was moved or copied: its catalog still globs the original's files.
            con.close()
            try:
                refresh_catalog(wr, force=True)
                con = duckdb.connect(wr.catalog_path(), read_only=True)
            except (WarehouseCatalogError, OSError):  # a read-only copy: views in memory instead
                con = duckdb.connect()
                for sql in view_statements(wr):
                    con.execute(sql)
        con.execute("SET parquet_metadata_cache = true")
        return con
    con = duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")
    # Never fetch an extension at run time (air-gapped sites): s3:// goes through s3fs.
    con.execute("SET autoinstall_known_extensions = false")
    con.register_filesystem(s3_filesystem(s3_secret))
    for sql in view_statements(wr):
        con.execute(sql)
    return con


def s3_filesystem(options: dict | None = None):
    """An s3fs filesystem for DuckDB to read `s3://` through (`register_filesystem`).

    `options` are the `s3_secret` keys of `connect` (key_id, secret, session_token, region,
    endpoint, use_ssl; url_style is implied: s3fs addresses by path when an endpoint is
    given). Without them botocore's usual chain applies: AWS_* variables (AWS_ENDPOINT_URL
    included), ~/.aws files, instance roles. Listings are not cached, so files written after
    the connection opened are seen.
    """
    import s3fs

    opts = dict(options or {})
    kwargs: dict = {"use_listings_cache": False, "skip_instance_cache": True}
    if opts.get("key_id"):
        kwargs["key"] = opts["key_id"]
    if opts.get("secret"):
        kwargs["secret"] = opts["secret"]
    if opts.get("session_token"):
        kwargs["token"] = opts["session_token"]
    endpoint = opts.get("endpoint")
    if endpoint:
        if "://" not in endpoint:
            endpoint = ("https" if opts.get("use_ssl", True) else "http") + "://" + endpoint
        kwargs["endpoint_url"] = endpoint
    if opts.get("region"):
        kwargs["client_kwargs"] = {"region_name": opts["region"]}
    return s3fs.S3FileSystem(**kwargs)


def _reads_this_root(con: duckdb.DuckDBPyConnection, root: WarehouseRoot) -> bool:
    """Whether every view of an open catalog that reads Parquet reads it under `root`.

    The views hold absolute globs: DuckDB resolves a relative path against the process's
    working directory (or `file_search_path`), not against the catalog file, so relative globs
    would break every reader that opens the file from elsewhere. A moved or copied warehouse
    is instead noticed here, when it is opened, and its catalog rebuilt."""
    for name, sql in con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall():
        if name in TABLES and "read_parquet(" in sql and _literal(root.glob(name)) not in sql:
            return False
    return True
