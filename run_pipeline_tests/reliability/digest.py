"""A content digest of a warehouse: per table, a SHA-256 over its column types and its rows as
read through the DuckDB catalog, independent of row order and of file layout, so two exports
of the same data compare equal and any lost, duplicated or altered value shows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from run_pipeline.warehouse import TABLES
from run_pipeline.warehouse.layout import CATALOG_FILE

#: Columns that legitimately differ between two exports of the same data.
VOLATILE_COLUMNS = frozenset({"exported_at"})


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type), sorted by name
    sha256: str


def canonical(row: tuple) -> str:
    """One row as text that tells values and types apart and round-trips floats exactly:
    `repr` writes 1, 1.0, '1' and True differently, the shortest repr of a float is exact
    (so any rounding shows), and every NaN is written `nan`, so NaN equals NaN."""
    return repr(row)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_catalog(root: str | Path) -> duckdb.DuckDBPyConnection:
    path = Path(root) / CATALOG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no DuckDB catalog at {path}: the export did not refresh it")
    return duckdb.connect(str(path), read_only=True)


def table_rows(con: duckdb.DuckDBPyConnection, table: str, *, projects: Iterable[str] | None = None,
               exclude: frozenset[str] = VOLATILE_COLUMNS) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(sorted (column, type) pairs, sorted canonical row strings) of one view."""
    described = con.execute(f"DESCRIBE {_quote(table)}").fetchall()
    columns = tuple(sorted((name, str(typ)) for name, typ, *_ in described if name not in exclude))
    select = ", ".join(_quote(name) for name, _ in columns)
    sql = f"SELECT {select} FROM {_quote(table)}"
    params: list = []
    if projects is not None:
        sql += " WHERE project IN (SELECT unnest(?))"
        params.append(sorted(projects))
    rows = con.execute(sql, params).fetchall()
    encoded = sorted(map(canonical, rows))
    return columns, encoded


def _table_digest(table: str, columns, rows: list[str]) -> TableDigest:
    h = hashlib.sha256()
    h.update(json.dumps(columns).encode())
    h.update("\n".join(["", *rows]).encode("utf-8"))
    return TableDigest(table, len(rows), columns, h.hexdigest())


def warehouse_digest(root: str | Path, *, projects: Iterable[str] | None = None,
                     tables: Iterable[str] = TABLES) -> dict[str, TableDigest]:
    """Digest of every table (view) of the warehouse at `root`, optionally only `projects`."""
    with open_catalog(root) as con:
        out = {}
        for table in tables:
            columns, rows = table_rows(con, table, projects=projects)
            out[table] = _table_digest(table, columns, rows)
        return out


def explain_difference(root_a: str | Path, root_b: str | Path, *, projects: Iterable[str] | None = None,
                       limit: int = 5) -> str:
    """Human-readable differences between two warehouses, table by table (for assert messages)."""
    lines = []
    with open_catalog(root_a) as a, open_catalog(root_b) as b:
        for table in TABLES:
            cols_a, rows_a = table_rows(a, table, projects=projects)
            cols_b, rows_b = table_rows(b, table, projects=projects)
            if cols_a == cols_b and rows_a == rows_b:
                continue
            lines.append(f"{table}: {len(rows_a)} rows vs {len(rows_b)}")
            if cols_a != cols_b:
                lines.append(f"  columns only in a: {sorted(set(cols_a) - set(cols_b))}")
                lines.append(f"  columns only in b: {sorted(set(cols_b) - set(cols_a))}")
                continue
            ca, cb = Counter(rows_a), Counter(rows_b)
            lines += [f"  only in a: {r[:300]}" for r in list((ca - cb).elements())[:limit]]
            lines += [f"  only in b: {r[:300]}" for r in list((cb - ca).elements())[:limit]]
    return "\n".join(lines) or "no difference"
