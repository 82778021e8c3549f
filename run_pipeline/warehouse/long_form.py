"""The long form of a history slice: every numeric value as a (step, key, value) row of the
`metrics` table, sorted by key then step, and how its files are written."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import METRICS_SCHEMA, NUMERIC, as_type

#: Most rows per row group of the long-form metrics files. It bounds the memory one flush
#: needs (a long run's history row group holds up to half a million numeric values); a
#: 2,000-step, 30-key run still fits in one.
METRICS_ROW_GROUP_ROWS = 128 * 1024
#: Rows are sorted by key, then step, and written with a page index in pages of at most this
#: many rows: DuckDB (2.0) then decodes only the pages of the keys a query filters on. One row
#: group per key instead was slower: DuckDB pays for every row group of every file.
METRICS_PAGE_ROWS = 2048
METRICS_WRITE_OPTIONS = {"write_page_index": True, "max_rows_per_page": METRICS_PAGE_ROWS}


def long_form(steps: pa.Array | pa.ChunkedArray, columns: Mapping[str, pa.Array | pa.ChunkedArray],
               types: dict[str, str], keys: dict[str, str]) -> Iterator[pa.Table]:
    """Every non-null numeric value of a history slice (its `steps` and its `columns` by
    physical name) as (step, key, value) rows, sorted by key then step, in tables of at most
    `METRICS_ROW_GROUP_ROWS` rows that never split a key unless one key alone has more rows
    than that. The keys of one table are gathered together (a wide run's row group holds
    thousands of keys, a few values each)."""
    numeric = sorted((n for n, t in types.items() if t in NUMERIC), key=lambda n: keys.get(n, n))
    dictionary = pa.array([keys.get(n, n) for n in numeric], pa.string())
    if isinstance(steps, pa.ChunkedArray):
        steps = steps.combine_chunks()
    group: list[tuple[int, pa.Array | pa.ChunkedArray]] = []
    group_rows = 0  # a running count: summing the group per key is quadratic on wide rows
    for i, name in enumerate(numeric):
        values = columns[name]
        count = len(values) - values.null_count
        if not count:
            continue
        if group and group_rows + count > METRICS_ROW_GROUP_ROWS:
            yield long_table(group, steps, dictionary)
            group, group_rows = [], 0
        group.append((i, values))
        group_rows += count
    if group:
        yield long_table(group, steps, dictionary)


def long_table(group: list[tuple[int, pa.Array | pa.ChunkedArray]], steps: pa.Array,
                dictionary: pa.Array) -> pa.Table:
    """The long form of the columns of `group` (each with its key's index in `dictionary`),
    built over all of them at once: their values as one chunked array, filtered once."""
    n = len(steps)
    chunks = []
    for _, column in group:
        for chunk in (column.chunks if isinstance(column, pa.ChunkedArray) else (column,)):
            chunks.append(as_type(chunk, pa.float64(), safe=False))
    values = pa.chunked_array(chunks, pa.float64())
    ids = np.fromiter((i for i, _ in group), np.int32, len(group))
    if values.null_count:
        valid = values.is_valid()
        at = pc.indices_nonzero(valid).to_numpy()
        values = pc.filter(values, valid)
        which, rows = np.divmod(at, n)
        step = steps.take(pa.array(rows))
        key = pa.array(ids[which], pa.int32())
    else:
        step = pa.chunked_array([steps] * len(group))
        key = pa.array(np.repeat(ids, n), pa.int32())
    key = pa.DictionaryArray.from_arrays(key, dictionary)
    return pa.Table.from_arrays([step, key, values], schema=METRICS_SCHEMA)
