"""Run history as Arrow record batches, page by page: W&B's exported Parquet first, then the
live tail over `history(minStep, maxStep)`; plus the full system-metric (`events`) stream.

Batch contract (the warehouse depends on it): column `_step` int64 first, then one column per
metric key named exactly as logged. Types are decided per batch: ints that fit int64 → int64;
numbers (incl. NaN/±Infinity) → float64; bools → bool; strings → string; anything else
(dicts, lists, media, ints beyond int64, mixed types) → string holding JSON text, marked with
field metadata `{b"run_pipeline.json": b"1"}`. Missing values are null.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from run_pipeline.client import queries
from run_pipeline.client.errors import (
    WandbIncompleteDataError,
    WandbNotFoundError,
    WandbQueryError,
)
from run_pipeline.client.transport import parse_json

if TYPE_CHECKING:
    from run_pipeline.client.run import Run

logger = logging.getLogger("run_pipeline.client")

STEP = "_step"
JSON_METADATA = {b"run_pipeline.json": b"1"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Windows never grow past this many steps (bounds one page when density jumps).
MAX_WINDOW_FACTOR = 64
#: Without `eventsLineCount`, ask for this many system-metric rows.
LARGE_SAMPLES = 10_000_000

# Integers of 19+ digits may not fit int64; pyarrow.json would turn them into doubles.
_LONG_DIGITS = re.compile(rb"\d{19,}")
_FAST_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null())


# ---------------------------------------------------------------------------------------------
# Rows → Arrow (pure)


def is_json_field(field: pa.Field) -> bool:
    """True for string columns that hold JSON text (dicts, lists, mixed types)."""
    return bool(field.metadata) and field.metadata.get(b"run_pipeline.json") == b"1"


def parse_rows(strings: Sequence[str]) -> list[dict[str, Any]]:
    """Parse W&B history row strings; accepts NaN/Infinity and integers of any size."""
    if not strings:
        return []
    try:
        return orjson.loads("[" + ",".join(strings) + "]")
    except orjson.JSONDecodeError:
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


def _fast_batch(strings: Sequence[str], first: Sequence[str]) -> pa.RecordBatch | None:
    """Parse rows as NDJSON with pyarrow.json (~3x faster than dicts); None when the page has
    something only the exact path types right (huge ints, mixed types, nested values, dates)."""
    data = "\n".join(strings).encode("utf-8")
    if _LONG_DIGITS.search(data):
        return None
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 64),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(strings):
        return None
    for field in table.schema:
        if field.type not in _FAST_TYPES:
            return None
    names = table.column_names
    if len(set(names)) != len(names):
        return None
    ordered = [k for k in first if k in names] + [k for k in names if k not in first]
    table = table.select(ordered)
    if STEP in ordered and table.schema.field(STEP).type != pa.int64():
        return None
    batches = table.combine_chunks().to_batches()
    if not batches:
        return None
    return batches[0]


def strings_to_batch(strings: Sequence[str], first: Sequence[str] = (STEP,)) -> pa.RecordBatch:
    """Build one record batch from W&B history row strings (one JSON object each)."""
    batch = _fast_batch(strings, first) if strings else None
    if batch is None:
        batch = rows_to_batch(parse_rows(strings), first)
    return batch


def normalize_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Bring a batch read from exported Parquet under the batch contract."""
    arrays, fields = [], []
    for field, array in zip(batch.schema, batch.columns):
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


# ---------------------------------------------------------------------------------------------
# Paging (step windows)

Fetch = Callable[[int, int, int], list]


def page_windows(fetch: Fetch, start: int, end: int, page_size: int) -> Iterator[list]:
    """Yield the non-empty results of `fetch(a, b, samples)` over half-open step windows
    covering [start, end).

    An empty window is not the end of history (a run may start at step 61,010): empty windows
    make the next one grow, dense ones make it shrink, so sparse or late-starting runs take
    few requests while a page stays near `page_size` rows. `samples` is always at least twice
    the window, so a full page can only mean duplicate steps: the window is then split, or its
    sample count raised, until nothing can have been cut off.
    """
    page_size = max(1, int(page_size))
    max_window = page_size * MAX_WINDOW_FACTOR
    window = page_size
    a = start
    while a < end:
        b = min(a + window, end)
        samples = 2 * (b - a)
        rows = fetch(a, b, samples)
        while len(rows) >= samples:
            if b - a > 1:
                b = a + (b - a) // 2
                samples = 2 * (b - a)
            else:
                samples *= 4
            rows = fetch(a, b, samples)
        if rows:
            yield rows
            window = max(1, min(max_window, (b - a) * page_size // len(rows)))
        else:
            window = min(max_window, window * 2)
        a = b


# ---------------------------------------------------------------------------------------------
# Readers bound to one run


class HistoryReader:
    """History and system-metric readers for one run (used through `Run`'s methods)."""

    def __init__(self, run: Run):
        self._run = run
        self._transport = run._api._transport

    def _run_field(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        data = self._transport.graphql(query, variables)
        run = (data.get("project") or {}).get("run")
        if run is None:
            raise WandbNotFoundError(f"run {self._run._path_str} not found")
        return run

    def _vars(self, **extra: Any) -> dict[str, Any]:
        run = self._run
        return {"entity": run.entity, "project": run.project, "run": run.id, **extra}

    # -- live pages ---------------------------------------------------------------------------

    def fetch_history_page(self, a: int, b: int, samples: int) -> list[str]:
        run = self._run_field(
            queries.HISTORY_PAGE, self._vars(minStep=a, maxStep=b, pageSize=samples)
        )
        return run.get("history") or []

    def fetch_sampled_page(self, keys: list[str], a: int, b: int, samples: int) -> list[dict]:
        # The server's sampledHistory treats maxStep as inclusive (wandb-api.md 3.8).
        spec = json.dumps({"keys": keys, "minStep": a, "maxStep": b - 1, "samples": samples})
        run = self._run_field(queries.SAMPLED_HISTORY_PAGE, self._vars(spec=spec))
        pages = run.get("sampledHistory") or [[]]
        return [r for r in (pages[0] or []) if a <= r.get(STEP, a) < b]

    def last_step(self) -> int:
        return self._run.lastHistoryStep

    def _bounds(self, min_step: int | None, max_step: int | None) -> tuple[int, int]:
        end = self.last_step() + 1
        if max_step is not None:
            end = min(end, int(max_step))
        return max(0, int(min_step or 0)), end

    def scan_rows(self, keys: list[str] | None, page_size: int, min_step: int | None,
                  max_step: int | None) -> Iterator[dict[str, Any]]:
        start, end = self._bounds(min_step, max_step)
        if keys:
            wanted = [STEP] + [k for k in keys if k != STEP]
            for rows in page_windows(
                lambda a, b, s: self.fetch_sampled_page(wanted, a, b, s), start, end, page_size
            ):
                yield from rows
        else:
            for strings in page_windows(self.fetch_history_page, start, end, page_size):
                yield from parse_rows(strings)

    def _live_batches(self, start: int, end: int, page_size: int) -> Iterator[pa.RecordBatch]:
        for strings in page_windows(self.fetch_history_page, start, end, page_size):
            batch = strings_to_batch(strings)
            # The server must honour the window; rows outside it would duplicate parquet rows.
            if STEP in batch.schema.names:
                steps = batch.column(STEP)
                mask = pc.and_(pc.greater_equal(steps, start), pc.less(steps, end))
                if not pc.all(mask).as_py():
                    batch = batch.filter(mask)
            if batch.num_rows:
                yield batch

    # -- export path --------------------------------------------------------------------------

    def parquet_history(self) -> tuple[list[str], list[Any]]:
        run = self._run_field(
            queries.RUN_PARQUET_HISTORY,
            {"entity": self._run.entity, "project": self._run.project,
             "runName": self._run.id, "liveKeys": [STEP]},
        )
        ph = run.get("parquetHistory") or {}
        return list(ph.get("parquetUrls") or []), list(ph.get("liveData") or [])

    def iter_batches(self, min_step: int | None, max_step: int | None, page_size: int,
                     parquet_batch_rows: int, tmp_dir: str | os.PathLike | None,
                     use_parquet: bool) -> Iterator[pa.RecordBatch]:
        lo = max(0, int(min_step or 0))
        urls: list[str] = []
        if use_parquet:
            urls, _live = self.parquet_history()
        max_parquet_step: int | None = None
        if urls:
            with tempfile.TemporaryDirectory(prefix="run_pipeline_parquet_", dir=tmp_dir) as tmp:
                for i, url in enumerate(urls):
                    path = os.path.join(tmp, f"history_{i}.parquet")
                    self._transport.download(url, path)
                    for batch, file_max in _read_parquet(path, lo, max_step, parquet_batch_rows):
                        if file_max is not None:
                            max_parquet_step = (
                                file_max if max_parquet_step is None
                                else max(max_parquet_step, file_max)
                            )
                        if batch is not None and batch.num_rows:
                            yield batch
                    os.unlink(path)
        start = lo if max_parquet_step is None else max(lo, max_parquet_step + 1)
        _, end = self._bounds(start, max_step)
        yield from self._live_batches(start, end, page_size)

    # -- system metrics -----------------------------------------------------------------------

    def events_line_count(self) -> int | None:
        try:
            run = self._run_field(queries.RUN_EVENTS_LINE_COUNT, {
                "entity": self._run.entity, "project": self._run.project, "name": self._run.id})
        except WandbQueryError:
            return None  # a server without the field: fall back to a large sample count
        value = run.get("eventsLineCount")
        return None if value is None else int(value)

    def system_metric_strings(self) -> list[str]:
        expected = self.events_line_count()
        if expected == 0:
            return []
        samples = expected if expected is not None else LARGE_SAMPLES
        run = self._run_field(queries.RUN_FULL_EVENTS, {
            "entity": self._run.entity, "project": self._run.project, "name": self._run.id,
            "samples": samples})
        strings = run.get("events") or []
        if expected is not None and len(strings) != expected:
            raise WandbIncompleteDataError(
                f"run {self._run._path_str}: server holds {expected} system-metric rows "
                f"but events(samples: {samples}) returned {len(strings)}"
            )
        return strings

    def iter_system_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        strings = self.system_metric_strings()
        for i in range(0, len(strings), batch_rows):
            yield strings_to_batch(strings[i: i + batch_rows], first=("_timestamp", "_runtime"))


def _read_parquet(path: str, min_step: int, max_step: int | None,
                  batch_rows: int) -> Iterable[tuple[pa.RecordBatch | None, int | None]]:
    """Batches of one exported file filtered to [min_step, max_step), each with the file's
    highest step seen so far in it (unfiltered, for the live-tail boundary)."""
    pf = pq.ParquetFile(path)
    for raw in pf.iter_batches(batch_size=batch_rows):
        batch = normalize_batch(raw)
        if STEP not in batch.schema.names:
            raise WandbQueryError("exported history parquet has no _step column")
        steps = batch.column(STEP)
        top = pc.max(steps).as_py()
        mask = pc.greater_equal(steps, min_step)
        if max_step is not None:
            mask = pc.and_(mask, pc.less(steps, int(max_step)))
        mask = pc.fill_null(mask, False)
        if not pc.all(mask).as_py():
            batch = batch.filter(mask)
        yield batch, top
