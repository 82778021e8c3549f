"""One page of history rows with many distinct keys, each row holding few of them (sweeps over
many layers log per-layer keys), as a record batch under the batch contract of `batches.py`.

pyarrow.json pays per distinct key and per parse block: a 1,000-row page of 2,003 keys, 50 a
row, takes it about ten times as long as orjson takes to parse the page. Such a page is parsed
by orjson instead, each key's values gathered from only the rows that hold it, and the numeric
columns (nearly all of a wide page) laid out together: a bitmap of validity per key, and
buffers of values that keys never holding a value in the same row share (what lies under a
null is never read), so a page holds about as many rows of values as its fullest row has keys
(0.6 MB for 1,000 rows of 2,003 keys, 50 a row, not the 16 MB of a buffer per key). Every
other column is built as `rows_to_batch` builds it, so a page gives the batch
`strings_to_batch` gives, whichever way it was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from run_pipeline.client.codec import loads_lenient, may_be_rounded, parse_json
from run_pipeline.shared_values import assign_lanes, lane_arrays, zeros

#: A page is read here when rows sampled from it name at least this many distinct keys...
WIDE_MIN_KEYS = 256
#: ...and at least this many times as many as the row naming the most (the keys are sparse).
WIDE_MIN_SPREAD = 2
#: Rows of a page sampled (evenly) to decide.
SAMPLE_ROWS = 8

_FLOAT, _INT = 0, 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ROUNDED = 2.0**63


def looks_wide(strings: Sequence[str]) -> bool:
    """Whether the page's keys are many and sparse, judged from a few rows spread over it (a
    few microseconds; a page of ordinary rows stays with pyarrow.json)."""
    n = len(strings)
    if n < 2:
        return False
    seen: set[str] = set()
    most = 0
    step = max(1, n // SAMPLE_ROWS)
    for i in range(0, n, step):
        try:
            row = orjson.loads(strings[i])
        except orjson.JSONDecodeError:
            try:  # NaN/Infinity tokens: only the keys count here
                row = orjson.loads(strings[i].replace("NaN", "0").replace("Infinity", "0"))
            except orjson.JSONDecodeError:
                continue
        if type(row) is not dict:
            return False
        seen.update(row)
        most = max(most, len(row))
    return len(seen) >= WIDE_MIN_KEYS and len(seen) >= WIDE_MIN_SPREAD * most


def parse_page(strings: Sequence[str], exact: bool = True) -> list[Any]:
    """The page's rows: parsed at once by orjson, a row it rejects (NaN/Infinity tokens) on
    its own. With `exact`, a row orjson may have rounded (it reads an integer beyond 64 bits
    as a float of magnitude >= 2**63) is parsed again exactly."""
    try:
        rows = orjson.loads("[" + ",".join(strings) + "]")
    except orjson.JSONDecodeError:
        rows = [loads_lenient(s) for s in strings]
    if exact and may_be_rounded(rows):
        rows = [row if not may_be_rounded(row) else parse_json(s) for row, s in zip(rows, strings)]
    return rows



def _numeric_kind(values: list[Any]) -> int | None:
    """How a key's values are laid out in a matrix: float64, int64, or None (built one by one)."""
    kinds = set(map(type, values))
    if kinds == {float}:
        return _FLOAT
    if kinds == {int}:
        if all(_INT64_MIN <= v <= _INT64_MAX for v in values):
            return _INT
        return None
    # Ints among floats: pyarrow.json reads such a column as float64 (an int beyond 2**53
    # rounded to the nearest double, as here); an int beyond int64 makes it JSON text
    # (`batches._column`).
    if kinds == {int, float} and all(_INT64_MIN <= v <= _INT64_MAX for v in values if type(v) is int):
        return _FLOAT
    return None


def _matrix_columns(n: int, keys: list[str], gathered: dict[str, tuple[list[int], list[Any]]],
                    dtype: type, arrow_type: pa.DataType, check: bool = False) -> dict[str, pa.Array]:
    """Arrow columns of `n` rows for `keys`, all of one numeric type: each key's validity is
    a slice of one bitmap matrix, and its values a slice of one matrix of values shared with
    the keys whose rows it never meets (what lies under a null is never read), so the page
    holds about as many rows of values as its fullest row has keys, not one per key. With
    `check`, raises `_MayBeRounded` for a float of magnitude >= 2**63 (NaN and ±Infinity
    are floats)."""
    counts = [len(gathered[k][0]) for k in keys]
    rows_at = np.fromiter(chain.from_iterable(gathered[k][0] for k in keys), np.int64, sum(counts))
    values = np.array(list(chain.from_iterable(gathered[k][1] for k in keys)), dtype=dtype)
    if check:
        finite = np.abs(values[np.isfinite(values)])
        if finite.size and finite.max() >= _ROUNDED:
            raise _MayBeRounded
    which = np.repeat(np.arange(len(keys)), counts)
    present = np.zeros((len(keys), n), dtype=bool)
    present[which, rows_at] = True
    bits = np.packbits(present, axis=1, bitorder="little")
    del present
    lane, lanes = assign_lanes(bits)
    value_buffer, matrix = zeros((lanes, n), dtype)
    matrix[lane[which], rows_at] = values
    return dict(zip(keys, lane_arrays(arrow_type, n, bits, counts, lane, value_buffer)))


class _MayBeRounded(Exception):
    """A value orjson read may have been an integer beyond 64 bits."""


def wide_batch(strings: Sequence[str], first: Sequence[str]) -> pa.RecordBatch:
    """The page as one record batch, exactly as `batches.strings_to_batch` types it. Whether
    orjson may have rounded an integer is decided from the values as they are laid out (the
    matrices' extremes, a walk of the other columns' values), not by a walk of the page; only
    then is the page parsed again, exactly."""
    try:
        return _wide_batch(parse_page(strings, exact=False), first, check=True)
    except _MayBeRounded:
        return _wide_batch(parse_page(strings), first, check=False)


def _wide_batch(rows: list[Any], first: Sequence[str], check: bool) -> pa.RecordBatch:
    from run_pipeline.client.batches import (
        JSON_METADATA,
        STEP,
        _batch_metadata,
        _column,
        _field_name,
    )

    n = len(rows)
    gathered: dict[str, tuple[list[int], list[Any]]] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            entry = gathered.get(key)
            if entry is None:
                entry = gathered[key] = ([], [])
            entry[0].append(i)
            entry[1].append(value)
    by_kind: dict[int, list[str]] = {_FLOAT: [], _INT: []}
    others = []
    for key, (_, values) in gathered.items():
        kind = _numeric_kind(values) if key != STEP and None not in values else None
        if kind is not None:
            by_kind[kind].append(key)
        else:
            others.append(values)
    if check and may_be_rounded(others):
        raise _MayBeRounded
    built: dict[str, pa.Array] = {}
    if by_kind[_FLOAT]:
        built.update(_matrix_columns(n, by_kind[_FLOAT], gathered, np.float64, pa.float64(), check))
    if by_kind[_INT]:
        built.update(_matrix_columns(n, by_kind[_INT], gathered, np.int64, pa.int64()))
    names = [k for k in first if k in gathered] + [k for k in gathered if k not in first]
    arrays, fields = [], []
    canonical = True
    for name in names:
        array = built.get(name)
        is_json = False
        if array is None:
            at, values = gathered[name]
            column: list[Any] = [None] * n
            for i, value in zip(at, values):
                column[i] = value
            array, is_json, exact_text = _column(name, column)
            canonical = canonical and exact_text
        arrays.append(array)
        fields.append(pa.field(_field_name(name), array.type, metadata=JSON_METADATA if is_json else None))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=_batch_metadata(canonical)))
