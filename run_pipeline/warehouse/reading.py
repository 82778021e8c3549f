"""Running a query on the views while exports replace files under them.

DuckDB expands a view's glob and reads the files' footers when it binds a query, then opens
the files again by name to scan them. A run re-exported in between (its old part files deleted,
its `run.parquet` renamed over) fails the query: "Cannot open file … No such file or
directory", or "Prefetch registered for bytes outside file" when a file of the same name has
other bytes now. Nothing a writer can do with globbed files avoids this (deleting, emptying or
replacing a file all race with that second open), so readers that go through this package run
the query again: by the next attempt the commit has moved on, and the query binds to the files
as they are then.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

#: Attempts at one query before a changing-file error is raised to the caller.
ATTEMPTS = 20
#: Pause before the first retry; doubled each time up to `MAX_PAUSE` (about 15 s in all): on a
#: loaded machine a query can meet several commits in a row.
FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0
#: What DuckDB says when a file it listed was removed or replaced before it scanned it.
FILE_CHANGED = ("Cannot open file", "No such file or directory", "Prefetch registered for bytes outside file",
                "No magic bytes found at end of file")


def file_changed(exc: BaseException) -> bool:
    """Whether a DuckDB error says a file changed under the query (worth running it again)."""
    text = str(exc)
    return any(marker in text for marker in FILE_CHANGED)


class Result:
    """A query's rows, fetched whole, with the DB-API `description` of its columns."""

    def __init__(self, description: list, rows: list[tuple]):
        self.description = description
        self._rows = rows

    def fetchall(self) -> list[tuple]:
        return self._rows


def execute(con: duckdb.DuckDBPyConnection, sql: str, parameters: Any = None, *,
            attempts: int = ATTEMPTS) -> Result:
    """Run `sql` and fetch every row, again when a file changed under it (see the module
    docstring: DuckDB may only meet the change while fetching, so both happen per attempt);
    any other error, or the same one after `attempts` tries, is raised as DuckDB raised it."""
    import duckdb

    pause = FIRST_PAUSE
    for attempt in range(1, attempts + 1):
        try:
            cursor = con.execute(sql, parameters) if parameters is not None else con.execute(sql)
            return Result(cursor.description, cursor.fetchall() if cursor.description is not None else [])
        except duckdb.Error as exc:
            if attempt == attempts or not file_changed(exc):
                raise
        time.sleep(pause)
        pause = min(MAX_PAUSE, pause * 2)
    raise AssertionError("unreachable")
