"""History rows → Arrow record batches under the batch contract (pure functions).

Column `_step` int64 first, then one column per metric key named exactly as logged. Types are
decided per batch: ints that fit int64 → int64; numbers (incl. NaN/±Infinity) → float64;
bools → bool; strings → string; anything else (dicts, lists, media, ints beyond int64, mixed
types) → string holding JSON text, marked with field metadata `{b"run_pipeline.json": b"1"}`.
Missing values are null; rows keep their order (repeated steps included).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from run_pipeline.client.codec import loads_lenient, may_be_rounded, parse_json
from run_pipeline.client.ndjson_page import (
    SPLIT,
    float_leaf_kinds,
    huge_float_columns,
    read_page,
)
from run_pipeline.client.wide_page import looks_wide, wide_batch

STEP = "_step"
JSON_METADATA = {b"run_pipeline.json": b"1"}
#: Schema metadata of a batch whose JSON-text columns this module wrote itself, in canonical
#: form (compact, UTF-8, NaN/±Infinity as the strings "NaN"/"Infinity"/"-Infinity"): the
#: warehouse need not parse and write them again.
CANONICAL_BATCH_METADATA = {b"run_pipeline.json_canonical": b"1"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_FAST_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null())


def is_json_field(field: pa.Field) -> bool:
    """True for string columns that hold JSON text (dicts, lists, mixed types)."""
    return bool(field.metadata) and field.metadata.get(b"run_pipeline.json") == b"1"


def parse_rows(strings: Sequence[str]) -> list[dict[str, Any]]:
    """Parse W&B history row strings; accepts NaN/Infinity and integers of any size.

    The page is parsed at once by orjson; whether it may have rounded an integer beyond 64
    bits is decided from the parsed values (a walk that skips string contents, so a hex digest
    costs nothing). Rows orjson rejects (NaN/Infinity tokens) or may have rounded are parsed
    one by one, exactly."""
    if not strings:
        return []
    try:
        rows = orjson.loads("[" + ",".join(strings) + "]")
    except orjson.JSONDecodeError:
        return [parse_json(s) for s in strings]
    if may_be_rounded(rows):
        return [parse_json(s) for s in strings]
    return rows


_strict_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str,
                                  check_circular=False).encode
_json_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str, check_circular=False).encode


_SURROGATE = re.compile("[\ud800-\udfff]")


def plain_text(text: str) -> str:
    """Text UTF-8 can carry: a lone surrogate (JSON allows `\\ud800` alone; UTF-8 does not)
    becomes U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text)


def escaped_surrogates(json_text: str) -> str:
    """JSON text whose lone surrogates are spelled out as the six characters of their escape
    (a string holding `\\ud800`), as the warehouse stores them: DuckDB's JSON refuses the
    escape itself, and the original stays recoverable."""
    return _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", json_text)


def _strings(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except UnicodeEncodeError:
        return pa.array([None if v is None else plain_text(v) for v in values], pa.string())


def _json_array(texts: list[str | None]) -> pa.Array:
    try:
        return pa.array(texts, pa.string())
    except UnicodeEncodeError:  # a lone surrogate in some value
        return pa.array([None if t is None else escaped_surrogates(t) for t in texts], pa.string())


def _json_texts(values: list[Any], plain: bool = False) -> tuple[pa.Array, bool]:
    """JSON text of each value and whether all of it is canonical: a value holding NaN or
    ±Infinity keeps JSON's NaN/Infinity tokens (so `batch_to_rows` gives it back exactly) and
    is left to the warehouse to write canonically. `plain` says every float in `values` is 0
    or within [1e-4, 1e16) and finite (known from the Arrow arrays they were read from), where
    orjson writes exactly the canonical text, about ten times faster; orjson refuses what it
    cannot write the same (integers beyond 64 bits, lone surrogates, very deep nesting)."""
    if plain:
        try:
            return pa.array([None if v is None else orjson.dumps(v) for v in values], pa.string()), True
        except (TypeError, orjson.JSONEncodeError):
            pass
    encode = _strict_encode
    try:
        return _json_array([None if v is None else encode(v) for v in values]), True
    except ValueError:  # some value holds NaN or ±Infinity: only those keep the tokens
        pass
    out: list[str | None] = []
    for v in values:
        try:
            out.append(None if v is None else encode(v))
        except ValueError:
            out.append(_json_text(v))
    return _json_array(out), False


def _column(name: str, values: list[Any], plain: bool = False) -> tuple[pa.Array, bool, bool]:
    """Arrow array for one column by the batch contract; the flags say "holds JSON text" and
    "its JSON text is canonical" (`plain`: as for `_json_texts`)."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if name == STEP and kinds <= {int, float}:
        # Go-encoded rows may carry `_step` as 1.0; the step is an integer by definition.
        ints = [None if v is None else int(v) for v in values]
        return pa.array(ints, pa.int64()), False, True
    if not kinds:
        return pa.nulls(len(values)), False, True
    if kinds == {int}:
        try:
            return pa.array(values, pa.int64()), False, True
        except (OverflowError, pa.ArrowInvalid):
            pass
    elif kinds == {float} or kinds == {int, float}:
        if int not in kinds or all(
            INT64_MIN <= v <= INT64_MAX for v in values if type(v) is int
        ):
            return pa.array(values, pa.float64()), False, True
    elif kinds == {bool}:
        return pa.array(values, pa.bool_()), False, True
    elif kinds == {str}:
        return _strings(values), False, True
    array, canonical = _json_texts(values, plain)
    return array, True, canonical


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
    canonical = True
    for name in names:
        array, is_json, exact_text = _column(name, columns[name])
        canonical = canonical and exact_text
        arrays.append(array)
        fields.append(pa.field(_field_name(name), array.type, metadata=JSON_METADATA if is_json else None))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=_batch_metadata(canonical)))


def _field_name(key: str) -> str:
    """A key as a column name: as logged, but a lone surrogate becomes U+FFFD (Arrow names are UTF-8)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return plain_text(key)
    return key


def _exact_rows(strings: Sequence[str], keys: set[str], check: bool = True) -> list[dict[str, Any]]:
    """Parse rows for the values of `keys` only: as `parse_rows`, but the check for integers
    orjson may have rounded walks those values alone (the other columns come from pyarrow),
    and only when `check` (False: pyarrow.json read no float in them that could be one)."""
    try:
        rows = orjson.loads("[" + ",".join(strings) + "]")
    except orjson.JSONDecodeError:  # NaN/Infinity tokens somewhere on the page
        rows = [loads_lenient(s) for s in strings]
    if check and may_be_rounded([row.get(k) for row in rows for k in keys]):
        rows = [row if not may_be_rounded([row.get(k) for k in keys]) else parse_json(s)
                for row, s in zip(rows, strings)]
    return rows



def strings_to_batch(strings: Sequence[str], first: Sequence[str] = (STEP,)) -> pa.RecordBatch:
    """Build one record batch from W&B history row strings (one JSON object each).

    The page is parsed as NDJSON by pyarrow.json (C++, strict about types). The fallback is
    per column, never per page: columns it types by the contract stay as it read them; a
    column it cannot (nested values, date-like strings, a float column that may hold an
    integer beyond int64, a key of mixed kinds, which is split by kind so that the rest of the
    page still reads) is rebuilt from exactly parsed rows, and only the rows where that column
    has a value are parsed. Pages pyarrow.json cannot read even so take the exact path whole.
    A page of many sparse keys is read by `wide_page` instead (pyarrow.json pays per key).
    """
    if not strings:
        return rows_to_batch([], first)
    if looks_wide(strings):
        return wide_batch(strings, first)
    data = "\n".join(strings).encode("utf-8")
    read = read_page(data)
    if read is None:
        return rows_to_batch(parse_rows(strings), first)
    table, split = read
    names = table.column_names
    schema = table.schema
    if (table.num_rows != len(strings) or len(set(names)) != len(names)
            or (STEP in names and schema.field(STEP).type != pa.int64())):
        return rows_to_batch(parse_rows(strings), first)
    # Each output column: its name and the pyarrow columns it comes from (by name: a table's
    # lookup by name scans its columns, which on a page of thousands of keys adds up).
    by_name = dict(zip(names, table.columns))
    members: dict[str, list[str]] = {}
    for name in names:
        base = name.split(SPLIT)[0] if SPLIT in name else name
        members.setdefault(base if base in split else name, []).append(name)
    huge = huge_float_columns(table)
    exact = {k for k in split if k in members}
    exact |= {name for name, t in zip(names, schema.types) if t not in _FAST_TYPES and name in members}
    # What the floats pyarrow.json read in the rebuilt keys say: whether one may be a rounded
    # integer (then the exact rows are checked) and whether orjson may write their JSON text.
    check, plain = float_leaf_kinds([by_name[m] for key in exact for m in members[key]])
    check = check or bool(huge)
    exact |= huge
    values: dict[str, list[Any]] = {}
    if exact:
        needed = None
        for key in exact:
            for member in members[key]:
                valid = by_name[member].is_valid()
                needed = valid if needed is None else pc.or_(needed, valid)
        if isinstance(needed, pa.ChunkedArray):
            needed = needed.combine_chunks()
        rows_at = pc.indices_nonzero(needed).to_pylist()
        parsed = _exact_rows([strings[i] for i in rows_at], exact, check)
        n = len(strings)
        for key in exact:
            column = values[key] = [None] * n
            for i, row in zip(rows_at, parsed):
                column[i] = row.get(key)
    ordered = [k for k in first if k in members] + [k for k in members if k not in first]
    arrays, fields = [], []
    canonical = True
    for name in ordered:
        if name in values:
            array, is_json, exact_text = _column(name, values[name], plain and name not in huge)
            canonical = canonical and exact_text
            arrays.append(array)
            fields.append(pa.field(name, array.type, metadata=JSON_METADATA if is_json else None))
            continue
        column = by_name[name]
        arrays.append(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
        fields.append(pa.field(name, column.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=_batch_metadata(canonical)))


def normalize_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Bring a batch read from exported Parquet under the batch contract."""
    arrays, fields = [], []
    canonical = True
    for field, array in zip(batch.schema, batch.columns, strict=True):
        array, metadata, exact_text = _normalize_array(field, array)
        canonical = canonical and exact_text
        if field.name == STEP and array.type != pa.int64():
            array = pc.cast(array, pa.int64())
        arrays.append(array)
        fields.append(pa.field(field.name, array.type, metadata=metadata))
    names = [f.name for f in fields]
    order = ([names.index(STEP)] if STEP in names else []) + [
        i for i, n in enumerate(names) if n != STEP
    ]
    return pa.RecordBatch.from_arrays(
        [arrays[i] for i in order],
        schema=pa.schema([fields[i] for i in order], metadata=_batch_metadata(canonical)),
    )


def _batch_metadata(canonical: bool) -> dict | None:
    return CANONICAL_BATCH_METADATA if canonical else None


def _normalize_array(field: pa.Field, array: pa.Array) -> tuple[pa.Array, dict | None, bool]:
    """The array under the batch contract, its field metadata (JSON text or not) and whether
    JSON text in it is canonical (text taken over from the file is not known to be)."""
    t = array.type
    if pa.types.is_dictionary(t):
        array = array.dictionary_decode()
        t = array.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        is_json = is_json_field(field)
        return pc.cast(array, pa.string()), JSON_METADATA if is_json else None, not is_json
    if pa.types.is_integer(t):
        try:
            return pc.cast(array, pa.int64()), None, True
        except pa.ArrowInvalid:
            pass
    elif pa.types.is_floating(t):
        return pc.cast(array, pa.float64()), None, True
    elif pa.types.is_boolean(t) or pa.types.is_null(t):
        return array, None, True
    if pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        # W&B's export types (see the emulator's parquet_export.py): dicts as structs, a key of
        # several kinds as a struct of `_type_<kind>` fields; a union may hold plain scalars.
        convert = _from_parquet if _needs_rebuild(array) else _as_is
        plain = float_leaf_kinds([array])[1]
        array, is_json, exact_text = _column(field.name, _values(array, convert), plain)
        return array, JSON_METADATA if is_json else None, exact_text
    array, exact_text = _json_texts(_values(array, lambda v: v))
    return array, JSON_METADATA, exact_text


def _values(array: pa.Array, convert) -> list[Any]:
    """`convert` of each value of `array`, None where it is null; nulls cost nothing (history
    columns of media and histograms are mostly null)."""
    if array.null_count == 0:
        return [convert(v) for v in array.to_pylist()]
    out: list[Any] = [None] * len(array)
    valid = array.is_valid()
    for i, v in zip(pc.indices_nonzero(valid).to_pylist(), array.filter(valid).to_pylist()):
        out[i] = convert(v)
    return out


def _as_is(value: Any) -> Any:
    return value


def _needs_rebuild(array: pa.Array) -> bool:
    """Whether values of a nested column read as Python differ from what was logged: a union
    struct, a map, or a struct field null where its struct is not (a dict without that key).
    Dense media, histogram and table columns need none of that."""
    t = array.type
    if pa.types.is_struct(t):
        if any(t.field(i).name.startswith("_type_") for i in range(t.num_fields)):
            return True
        return any(child.null_count > array.null_count or _needs_rebuild(child) for child in array.flatten())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _needs_rebuild(array.flatten())
    return pa.types.is_map(t)


def _from_parquet(value: Any) -> Any:
    """A value read from an exported Parquet struct/list/map back as it was logged: a struct's
    null fields are keys the dict did not have, a struct of `_type_<kind>` fields is the one
    value it holds, a map is a dict."""
    kind = type(value)
    if kind is dict:
        if value and all(k.startswith("_type_") for k in value):
            return next((_from_parquet(v) for v in value.values() if v is not None), None)
        return {k: _from_parquet(v) for k, v in value.items() if v is not None}
    if kind is list:
        if value and all(type(v) is tuple and len(v) == 2 for v in value):
            return {str(k): _from_parquet(v) for k, v in value}
        return [_from_parquet(v) for v in value]
    return value


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
