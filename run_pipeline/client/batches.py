"""History rows → Arrow record batches under the batch contract (pure functions).

Column `_step` int64 first, then one column per metric key named exactly as logged. Types are
decided per batch: ints that fit int64 → int64; numbers (incl. NaN/±Infinity) → float64;
bools → bool; strings → string; anything else (dicts, lists, media, ints beyond int64, mixed
types) → string holding JSON text, marked with field metadata `{b"run_pipeline.json": b"1"}`.
Missing values are null; rows keep their order (repeated steps included).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from run_pipeline.client.transport import may_hold_big_ints, parse_json

STEP = "_step"
JSON_METADATA = {b"run_pipeline.json": b"1"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_FAST_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null())


def is_json_field(field: pa.Field) -> bool:
    """True for string columns that hold JSON text (dicts, lists, mixed types)."""
    return bool(field.metadata) and field.metadata.get(b"run_pipeline.json") == b"1"


def parse_rows(strings: Sequence[str]) -> list[dict[str, Any]]:
    """Parse W&B history row strings; accepts NaN/Infinity and integers of any size."""
    if not strings:
        return []
    page = "[" + ",".join(strings) + "]"
    if not may_hold_big_ints(page):
        try:
            return orjson.loads(page)
        except orjson.JSONDecodeError:
            pass
    return [parse_json(s) for s in strings]


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _column(name: str, values: list[Any]) -> tuple[pa.Array, bool]:
    """Arrow array for one column by the batch contract; the flag says "holds JSON text"."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if name == STEP and kinds <= {int, float}:
        # Go-encoded rows may carry `_step` as 1.0; the step is an integer by definition.
        ints = [None if v is None else int(v) for v in values]
        return pa.array(ints, pa.int64()), False
    if not kinds:
        return pa.nulls(len(values)), False
    if kinds == {int}:
        try:
            return pa.array(values, pa.int64()), False
        except (OverflowError, pa.ArrowInvalid):
            pass
    elif kinds == {float} or kinds == {int, float}:
        if int not in kinds or all(
            INT64_MIN <= v <= INT64_MAX for v in values if type(v) is int
        ):
            return pa.array(values, pa.float64()), False
    elif kinds == {bool}:
        return pa.array(values, pa.bool_()), False
    elif kinds == {str}:
        return pa.array(values, pa.string()), False
    return pa.array([None if v is None else _json_text(v) for v in values], pa.string()), True


def rows_to_batch(rows: Sequence[dict[str, Any]], first: Sequence[str] = (STEP,)) -> pa.RecordBatch:
    """Build one record batch from row dicts (sparse rows allowed; order of rows kept)."""
    n = len(rows)
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            col = columns.get(key)
            if col is None:
                col = columns[key] = [None] * n
            col[i] = value
    names = [k for k in first if k in columns] + [k for k in columns if k not in first]
    arrays, fields = [], []
    for name in names:
        array, is_json = _column(name, columns[name])
        arrays.append(array)
        fields.append(pa.field(name, array.type, metadata=JSON_METADATA if is_json else None))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _may_hold_huge_ints(columns: Sequence[pa.ChunkedArray]) -> bool:
    """pyarrow.json reads an integer beyond int64 into a double >= 2**63 in magnitude; such a
    double column must take the exact path (a real float that large only costs speed).

    All the page's float columns are checked at once, as one chunked array (no copy): a few
    kernel calls per page instead of a few per column."""
    chunks = [chunk for column in columns for chunk in column.chunks]
    if not chunks:
        return False
    values = pa.chunked_array(chunks, pa.float64())
    bounds = pc.min_max(values)  # NaN-blind, and cheaper than scanning the page's text
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (-(2.0**63) < low and high < 2.0**63):
        return False
    finite = pc.filter(values, pc.is_finite(values))  # ±Infinity is a float, not a huge int
    if len(finite) == 0:
        return False
    return pc.max(pc.abs(finite)).as_py() >= 2.0**63


def strings_to_batch(strings: Sequence[str], first: Sequence[str] = (STEP,)) -> pa.RecordBatch:
    """Build one record batch from W&B history row strings (one JSON object each).

    The page is parsed as NDJSON by pyarrow.json (C++, strict about types: a key that is a
    number in one row and a bool or string in another is an error, not a silent coercion).
    Columns it cannot type by the contract (nested values, date-like strings) are rebuilt
    from exactly parsed rows; pages it cannot read at all (mixed types, integers that may
    not fit int64) take the exact path entirely.
    """
    if not strings:
        return rows_to_batch([], first)
    data = "\n".join(strings).encode("utf-8")
    try:
        table = pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=1 << 20))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return rows_to_batch(parse_rows(strings), first)
    names = table.column_names
    schema = table.schema
    if (table.num_rows != len(strings) or len(set(names)) != len(names)
            or (STEP in names and schema.field(STEP).type != pa.int64())
            or _may_hold_huge_ints([table.column(i) for i, f in enumerate(schema)
                                    if f.type == pa.float64()])):
        return rows_to_batch(parse_rows(strings), first)
    rows: list[dict[str, Any]] | None = None
    ordered = [k for k in first if k in names] + [k for k in names if k not in first]
    arrays, fields = [], []
    for name in ordered:
        column = table.column(name)
        if column.type in _FAST_TYPES:
            arrays.append(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
            fields.append(pa.field(name, column.type))
            continue
        if rows is None:
            rows = parse_rows(strings)
        array, is_json = _column(name, [row.get(name) for row in rows])
        arrays.append(array)
        fields.append(pa.field(name, array.type, metadata=JSON_METADATA if is_json else None))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def normalize_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Bring a batch read from exported Parquet under the batch contract."""
    arrays, fields = [], []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        array, is_json = _normalize_array(field, array)
        if field.name == STEP and array.type != pa.int64():
            array = pc.cast(array, pa.int64())
        metadata = JSON_METADATA if is_json else None
        arrays.append(array)
        fields.append(pa.field(field.name, array.type, metadata=metadata))
    names = [f.name for f in fields]
    order = ([names.index(STEP)] if STEP in names else []) + [
        i for i, n in enumerate(names) if n != STEP
    ]
    return pa.RecordBatch.from_arrays(
        [arrays[i] for i in order], schema=pa.schema([fields[i] for i in order])
    )


def _normalize_array(field: pa.Field, array: pa.Array) -> tuple[pa.Array, bool]:
    t = array.type
    if pa.types.is_dictionary(t):
        array = array.dictionary_decode()
        t = array.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.cast(array, pa.string()), is_json_field(field)
    if pa.types.is_integer(t):
        try:
            return pc.cast(array, pa.int64()), False
        except pa.ArrowInvalid:
            pass
    elif pa.types.is_floating(t):
        return pc.cast(array, pa.float64()), False
    elif pa.types.is_boolean(t) or pa.types.is_null(t):
        return array, False
    values = array.to_pylist()
    return pa.array([None if v is None else _json_text(v) for v in values], pa.string()), True


def batch_to_rows(batch: pa.RecordBatch | pa.Table, *, drop_nulls: bool = True) -> list[dict]:
    """Rows back as dicts, JSON-text columns decoded (the inverse of the batch contract)."""
    json_cols = {f.name for f in batch.schema if is_json_field(f)}
    rows = batch.to_pylist()
    for row in rows:
        for key in json_cols:
            value = row.get(key)
            if value is not None:
                row[key] = parse_json(value)
        if drop_nulls:
            for key in [k for k, v in row.items() if v is None]:
                del row[key]
    return rows
