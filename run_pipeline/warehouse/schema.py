"""History value typing (the type lattice, Arrow types, JSON text), column naming for DuckDB,
and the fixed schemas of the runs, config/summary and metrics tables.

Typing rule, per run: a key whose values are all integers that fit int64 is `int` (BIGINT);
all numbers `double`; all strings `string`; all booleans `bool`; anything else (dicts, lists,
media objects, integers beyond int64, keys whose values mix kinds) `json`, stored as VARCHAR
holding JSON text. A key with no value at all is `null`. JSON text is always valid JSON: NaN
and ±Infinity, which JSON cannot spell, are written as the strings "NaN", "Infinity" and
"-Infinity" (DOUBLE columns keep the real IEEE values).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from run_pipeline import deep_json

NULL, BOOL, INT, DOUBLE, STRING, JSON = "null", "bool", "int", "double", "string", "json"
NUMERIC = (INT, DOUBLE)
JSON_FIELD_KEY = b"run_pipeline.json"
JSON_METADATA = {JSON_FIELD_KEY: b"1"}
#: Schema metadata of a client batch whose JSON columns already hold canonical text (the text
#: `json_text` writes), so it is stored as it is rather than parsed and written again.
CANONICAL_JSON_KEY = b"run_pipeline.json_canonical"
#: Field metadata holding the metric key as logged when the column had to be renamed.
KEY_FIELD_KEY = b"run_pipeline.key"
STEP = "_step"
TIMESTAMP, RUNTIME = "_timestamp", "_runtime"
INT64_MAX = 2**63 - 1
#: Stand-in column name for the empty metric key (DuckDB cannot name a column "").
EMPTY_KEY_COLUMN = "(empty key)"

_ARROW = {NULL: pa.null(), BOOL: pa.bool_(), INT: pa.int64(), DOUBLE: pa.float64(),
          STRING: pa.string(), JSON: pa.string()}
_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def join_types(a: str, b: str) -> str:
    """Least type holding values of both: null is the identity, int+double is double, any
    other mix is json."""
    if a == b or b == NULL:
        return a
    if a == NULL:
        return b
    if {a, b} == {INT, DOUBLE}:
        return DOUBLE
    return JSON


def view_equivalent(stored: str, final: str) -> bool:
    """Whether a file typed `stored` reads back through a `union_by_name` view exactly like one
    typed `final`: DuckDB promotes BIGINT to DOUBLE and NULL to anything, nothing else."""
    return stored == final or stored == NULL or (stored == INT and final == DOUBLE)


def arrow_type(ltype: str) -> pa.DataType:
    return _ARROW[ltype]


def arrow_field(name: str, ltype: str, key: str | None = None) -> pa.Field:
    metadata = dict(JSON_METADATA) if ltype == JSON else {}
    if key is not None and key != name:
        metadata[KEY_FIELD_KEY] = key.encode("utf-8", "surrogatepass")
    return pa.field(name, _ARROW[ltype], nullable=True, metadata=metadata or None)


# ---------------------------------------------------------------------------------------------
# JSON text


def sanitize_json(value: Any) -> Any:
    """`value` with non-finite floats replaced by "NaN"/"Infinity"/"-Infinity" strings."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else _NONFINITE[value]
    if isinstance(value, dict):
        return {str(k): sanitize_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize_json(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Canonical JSON text: compact, UTF-8, valid for DuckDB's JSON type. Plain scalars (most
    config and summary leaves) skip the encoder and get exactly the text it writes. A lone
    surrogate (which UTF-8 cannot carry) is kept as the text of its escape (see
    `escape_surrogates`). Any depth is written (see `run_pipeline.deep_json`)."""
    t = type(value)
    if t is float and math.isfinite(value):
        return float.__repr__(value)
    if t is int:
        return int.__repr__(value)
    if t is str:
        text = json.encoder.encode_basestring(value)
        return text if text.isascii() else escape_surrogates(text)
    if t is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return _encode_json(value)


_strict_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str,
                                  check_circular=False).encode


def _encode_json(value: Any) -> str:
    # Values parsed from JSON have string keys, so `sanitize_json` only matters when a
    # non-finite float is present, which the strict encoder refuses.
    try:
        try:
            text = _strict_encode(value)
        except ValueError:
            text = _strict_encode(sanitize_json(value))
    except RecursionError:  # nested deeper than the stdlib follows
        text = deep_json.dumps(value)
    return text if text.isascii() else escape_surrogates(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(json_text: str) -> str:
    """JSON text with each lone surrogate (only string contents can hold one) replaced by the
    six characters of its escape, `\\ud800` for U+D800: UTF-8 cannot carry the character and
    DuckDB's JSON refuses a lone surrogate escape, so the string holds its spelling."""
    return _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", json_text)


def plain_text(value: str) -> str:
    """Text for a VARCHAR column: a lone surrogate becomes U+FFFD (the replacement character).
    The JSON columns beside it keep the original (see `json_text`)."""
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


def canonical_json(text: str) -> str:
    """Re-serialize JSON text from the client so the same value always has the same text,
    whichever batch typing produced it. Text that is not JSON is kept as a JSON string."""
    try:
        return json_text(json.loads(text))
    except RecursionError:
        try:
            return json_text(deep_json.loads(text))
        except ValueError:
            return json_text(text)
    except ValueError:
        return json_text(text)


def to_json_array(array: pa.Array, ltype: str) -> pa.Array:
    """JSON text of every value of a column typed `ltype` (nulls stay null)."""
    if ltype == JSON:
        return array
    if ltype == NULL:
        return pa.nulls(len(array), pa.string())
    return pa.array([None if v is None else json_text(v) for v in array.to_pylist()], pa.string())


def convert(array: pa.Array, source: str, target: str) -> pa.Array:
    """Widen a column along the lattice (null → any, int → double, any → json)."""
    if source == target:
        return array
    if source == NULL:
        return pa.nulls(len(array), _ARROW[target])
    if source == INT and target == DOUBLE:
        return pc.cast(array, pa.float64(), safe=False)
    if target == JSON:
        return to_json_array(array, source)
    raise ValueError(f"cannot widen {source} to {target}")


# ---------------------------------------------------------------------------------------------
# Incoming batch columns


def as_type(array: pa.Array, arrow_type: pa.DataType, *, safe: bool = True) -> pa.Array:
    """`array` as `arrow_type` (no cast call when it already is: most columns are)."""
    return array if array.type == arrow_type else array.cast(arrow_type, safe=safe)


def classify(field: pa.Field, array: pa.Array, *, canonical: bool = False) -> tuple[str, pa.Array]:
    """Lattice type and normalized array of one column of a client batch."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count == len(array):
        return NULL, pa.nulls(len(array))
    if field.metadata and field.metadata.get(JSON_FIELD_KEY) == b"1":
        text = array.cast(pa.string()) if array.type != pa.string() else array
        if canonical:
            return JSON, text
        return JSON, pa.array([None if v is None else canonical_json(v) for v in text.to_pylist()], pa.string())
    t = array.type
    if pa.types.is_dictionary(t):
        return classify(pa.field(field.name, t.value_type, metadata=field.metadata), array.dictionary_decode(),
                        canonical=canonical)
    if pa.types.is_boolean(t):
        return BOOL, array
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t) and pc.max(array).as_py() > INT64_MAX:
            return JSON, to_json_array(array, INT)
        return INT, as_type(array, pa.int64())
    if pa.types.is_floating(t):
        return DOUBLE, as_type(array, pa.float64())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return STRING, as_type(array, pa.string())
    return JSON, pa.array([None if v is None else json_text(v) for v in array.to_pylist()], pa.string())


def _fold(name: str) -> str:
    """DuckDB compares identifiers ASCII-case-insensitively."""
    return name.lower() if name.isascii() else "".join(c.lower() if c.isascii() else c for c in name)


class ColumnNamer:
    """Physical Parquet column name for each metric key of one run.

    The name is the key exactly as logged, except where DuckDB could not keep it apart: the
    empty key becomes `(empty key)`, and a key equal (ignoring ASCII case) to a reserved column
    or to a key met earlier in the run gets ` (2)`, ` (3)`… appended. Keys are met in step order,
    so a full and an incremental export name columns alike. Renamed columns carry the original
    key in their field metadata, and the `metrics` table always holds the original key.
    """

    def __init__(self, reserved: Iterable[str], existing: Iterable[tuple[str, str]] = ()):
        self._reserved = [_fold(r) for r in reserved]
        self._taken = set(self._reserved)
        self.columns: dict[str, str] = {}
        for key, physical in existing:
            self.columns[key] = physical
            self._taken.add(_fold(physical))

    def physical(self, key: str) -> str:
        name = self.columns.get(key)
        if name is not None:
            return name
        base = key if key else EMPTY_KEY_COLUMN
        name, n = base, 1
        while _fold(name) in self._taken:
            n += 1
            name = f"{base} ({n})"
        self.columns[key] = name
        self._taken.add(_fold(name))
        return name


# ---------------------------------------------------------------------------------------------
# Fixed tables (the partition columns entity/project/run_id come from the directories)

_TS = pa.timestamp("us")
RUNS_SCHEMA = pa.schema([
    ("name", pa.string()), ("state", pa.string()), ("created_at", _TS), ("heartbeat_at", _TS),
    ("tags", pa.list_(pa.string())), ("notes", pa.string()), ("run_group", pa.string()),
    ("job_type", pa.string()), ("username", pa.string()), ("url", pa.string()),
    pa.field("config", pa.string(), metadata=JSON_METADATA),
    pa.field("summary", pa.string(), metadata=JSON_METADATA),
    pa.field("system_metrics", pa.string(), metadata=JSON_METADATA),
    ("history_line_count", pa.int64()), ("last_step", pa.int64()), ("exported_at", _TS),
])
KEY_VALUE_SCHEMA = pa.schema([
    ("key", pa.string()), pa.field("value", pa.string(), metadata=JSON_METADATA),
    ("value_double", pa.float64()), ("value_text", pa.string()),
])
METRICS_SCHEMA = pa.schema([
    ("step", pa.int64()), ("key", pa.dictionary(pa.int32(), pa.string())), ("value", pa.float64()),
])
