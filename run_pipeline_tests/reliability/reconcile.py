"""Reconcile a warehouse against the emulator dataset it was exported from, value by value.

Independent of the warehouse code: the source is read from `history.jsonl` / `run.json` with
the standard library, the warehouse from its Parquet files (hive directories decoded with
`urllib.parse.unquote`) or through the DuckDB views with bound parameters. Values are compared
in a typed canonical form (1, 1.0, True and "1" differ; NaN equals NaN; floats bit for bit),
after applying the warehouse's documented typing (README, "History
typing"): per run a key is BIGINT if all its values are integers fitting int64, DOUBLE if all
numbers, VARCHAR if all strings, BOOLEAN if all booleans, otherwise JSON text in which NaN and
±Infinity are the strings "NaN", "Infinity", "-Infinity". A logged null and a missing key both
read back as NULL.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


INT64 = (-(2**63), 2**63 - 1)
JSON_FIELD_KEY = b"run_pipeline.json"
KEY_FIELD_KEY = b"run_pipeline.key"
IDS = ("entity", "project", "run_id")


def canonical(value: Any) -> Any:
    """A JSON-able, type-tagged form of one value: 1, 1.0, True and "1" differ; NaN equals NaN;
    floats compare bit for bit (float.hex, so -0.0 is not 0.0); dicts ignore key order."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", "nan" if math.isnan(value) else value.hex()]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, (list, tuple)):
        return ["l", [canonical(v) for v in value]]
    if isinstance(value, dict):
        return ["m", sorted([k, canonical(v)] for k, v in value.items())]
    raise TypeError(f"no canonical form for {type(value).__name__}: {value!r}")


# ---------------------------------------------------------------------------------------------
# The source


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if INT64[0] <= v <= INT64[1] else "json"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    return "json"


def expected_types(rows: list[dict]) -> dict[str, str]:
    """The documented run-level type of every key with at least one non-null value."""
    kinds: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for key, value in row.items():
            if key != "_step" and value is not None:
                kinds[key].add(kind(value))
    out = {}
    for key, ks in kinds.items():
        if ks == {"int"}:
            out[key] = "int"
        elif ks <= {"int", "double"}:
            out[key] = "double"
        elif len(ks) == 1:
            out[key] = next(iter(ks))
        else:
            out[key] = "json"
    return out


def json_safe(v: Any) -> Any:
    """What the warehouse's JSON text decodes to (non-finite numbers become strings)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


def as_stored(value: Any, ltype: str) -> Any:
    if ltype == "double":
        return float(value)
    if ltype == "json":
        return json_safe(value)
    return value


def source_rows(rows: list[dict], types: dict[str, str]) -> Counter:
    """Multiset of canonical (step, {key: value}) rows, values as the warehouse stores them."""
    return Counter(_row_text(row["_step"], {k: as_stored(v, types[k]) for k, v in row.items()
                                             if k != "_step" and v is not None}) for row in rows)


def source_metrics(rows: list[dict], types: dict[str, str]) -> Counter:
    """Multiset of (step, key, value) for every numeric value of a numeric-typed key."""
    return Counter((row["_step"], k, json.dumps(canonical(float(v))))
                   for row in rows for k, v in row.items()
                   if k != "_step" and v is not None and types[k] in ("int", "double"))


def flatten(value: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in value.items():
        if isinstance(v, dict) and v and "_type" not in v:
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _row_text(step: int, values: dict[str, Any]) -> str:
    return json.dumps([step, sorted((k, canonical(v)) for k, v in values.items())], ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# The warehouse, read back


def ltype_of(field: pa.Field) -> str:
    if field.metadata and field.metadata.get(JSON_FIELD_KEY) == b"1":
        return "json"
    t = field.type
    return ("int" if t == pa.int64() else "double" if t == pa.float64() else "bool" if t == pa.bool_()
            else "string" if t == pa.string() else "null" if t == pa.null() else str(t))


def logged_key(field: pa.Field) -> str:
    """The metric key a column holds (renamed columns keep it in field metadata)."""
    if field.metadata and KEY_FIELD_KEY in field.metadata:
        return field.metadata[KEY_FIELD_KEY].decode("utf-8")
    return field.name


def parquet_files(root: Path, table: str) -> dict[tuple[str, str, str], list[Path]]:
    """Every visible part of `table` by run, the run decoded from the hive directory names."""
    out: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for path in sorted((root / table).glob("*/*/*/*.parquet")):
        parts = path.relative_to(root / table).parts[:3]
        names = [p.split("=", 1) for p in parts]
        assert [n[0] for n in names] == list(IDS), path
        out[tuple(urllib.parse.unquote(n[1], errors="strict") for n in names)].append(path)
    return out


def warehouse_history(files: list[Path]) -> tuple[Counter, dict[str, str], dict[str, str]]:
    """(multiset of canonical rows, {key: ltype}, {column name: key}) of one run's parts."""
    rows: Counter = Counter()
    types: dict[str, str] = {}
    names: dict[str, str] = {}
    for path in files:
        table = pq.read_table(path)
        fields = [f for f in table.schema if f.name != "_step"]
        for f in fields:
            key = logged_key(f)
            names[f.name] = key
            if ltype_of(f) != "null":
                assert types.get(key, ltype_of(f)) == ltype_of(f), f"{key!r} typed differently in {path}"
                types[key] = ltype_of(f)
        json_cols = {f.name for f in fields if ltype_of(f) == "json"}
        for record in table.to_pylist():
            values = {names[c]: (json.loads(v) if c in json_cols else v)
                      for c, v in record.items() if c != "_step" and v is not None}
            rows[_row_text(record["_step"], values)] += 1
    return rows, types, names


def fold(name: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in name)


def duckdb_history(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Every row of the `history` view by run, as {column: value} without NULLs (one query:
    the view over a 10,000-column run costs about a second per query)."""
    cursor = con.execute("SELECT * FROM history")
    columns = [d[0] for d in cursor.description]
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in cursor.fetchall():
        row = {c: v for c, v in zip(columns, record) if v is not None}
        out[tuple(row.pop(i) for i in IDS)].append(row)
    return out


def view_rows(rows: list[dict[str, Any]], names: dict[str, str], types: dict[str, str]) -> Counter:
    """Canonical rows of one run read through the view. View columns are matched to the run's
    columns ignoring ASCII case (DuckDB unions such names across runs)."""
    by_fold = {fold(n): k for n, k in names.items()}
    out: Counter = Counter()
    for row in rows:
        values = {}
        for column, value in row.items():
            if column != "_step":
                k = by_fold[fold(column)]
                values[k] = json.loads(value) if types[k] == "json" else value
        out[_row_text(row["_step"], values)] += 1
    return out


def duckdb_metrics(con: duckdb.DuckDBPyConnection, run: tuple[str, str, str]) -> Counter:
    rows = con.execute("SELECT step, key, value FROM metrics WHERE entity = ? AND project = ? AND run_id = ?",
                       list(run)).fetchall()
    return Counter((step, key, json.dumps(canonical(value))) for step, key, value in rows)


def key_values(con: duckdb.DuckDBPyConnection, table: str, run: tuple[str, str, str]) -> Counter:
    rows = con.execute(f"SELECT key, value, value_double, value_text FROM {table} "
                       "WHERE entity = ? AND project = ? AND run_id = ?", list(run)).fetchall()
    return Counter(json.dumps([k, canonical(json.loads(v)), canonical(d), canonical(t)], ensure_ascii=False)
                   for k, v, d, t in rows)


def expected_key_values(value: dict) -> Counter:
    def double(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return Counter(json.dumps([k, canonical(json_safe(v)), canonical(double(v)),
                               canonical(v if isinstance(v, str) else None)], ensure_ascii=False)
                   for k, v in flatten(value))
