"""Run history as Arrow record batches, page by page: W&B's exported Parquet first, then the
live tail over `history(minStep, maxStep)`; plus the full system-metric (`events`) stream.
Typing of the batches is in `batches.py`.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from run_pipeline.client import queries
from run_pipeline.client.batches import (
    STEP,
    normalize_batch,
    parse_rows,
    strings_to_batch,
)
from run_pipeline.client.errors import (
    WandbIncompleteDataError,
    WandbNotFoundError,
    WandbQueryError,
)

if TYPE_CHECKING:
    from run_pipeline.client.run import Run

#: Windows never grow past this many steps (bounds one page when density jumps).
MAX_WINDOW_FACTOR = 64
#: Bytes read at a time from each column of an exported Parquet file.
PARQUET_READ_BUFFER = 64 * 1024
#: At most about this many values (rows × columns) per batch read from an exported file.
PARQUET_BATCH_CELLS = 8_192 * 256
#: Without `eventsLineCount`, ask for this many system-metric rows.
LARGE_SAMPLES = 10_000_000


# ---------------------------------------------------------------------------------------------
# Paging (step windows)

Fetch = Callable[[int, int, int], list]


def page_windows(fetch: Fetch, start: int, end: int, page_size: int) -> Iterator[list]:
    """Yield the non-empty results of `fetch(a, b, samples)` over half-open step windows
    covering [start, end).

    An empty window is not the end of history (a run may start at step 61,010): empty windows
    make the next one grow, dense ones make it shrink, so sparse or late-starting runs take
    few requests while a page stays near `page_size` rows.

    No request asks for more than `page_size + 1` rows (a server honouring `page_size`, as the
    W&B SDK assumes, honours that). A window of unique steps no wider than `page_size` always
    fits; a page that comes back full may have been cut off (a wide window that turned dense,
    or repeated steps), so the window is halved, or a single step's sample count raised, and
    fetched again: no row is ever lost to truncation.
    """
    page_size = max(1, int(page_size))
    max_window = page_size * MAX_WINDOW_FACTOR
    window = page_size
    a = start
    while a < end:
        b = min(a + window, end)
        samples = min(b - a, page_size) + 1
        rows = fetch(a, b, samples)
        while len(rows) >= samples:
            if b - a > 1:
                b = a + (b - a) // 2
                samples = min(b - a, page_size) + 1
            else:
                samples *= 4
            rows = fetch(a, b, samples)
        if rows:
            yield rows
            window = max(1, min(max_window, (b - a) * page_size // len(rows)))
        else:
            window = min(max_window, window * 2)
        a = b


_DONE = object()


def prefetch(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Iterate `items` in a background thread, up to `depth` items ahead, so the next page is
    on the wire while this one is parsed. Exceptions surface in the consumer, in order."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((_DONE, exc))

    worker = threading.Thread(target=produce, name="run_pipeline-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = buffer.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


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
        pages = page_windows(self.fetch_history_page, start, end, page_size)
        for strings in prefetch(pages):
            batch = strings_to_batch(strings)
            # The server must honour the window; rows outside it would duplicate parquet rows.
            if STEP in batch.schema.names:
                steps = batch.column(STEP)
                bounds = pc.min_max(steps)
                low, high = bounds["min"].as_py(), bounds["max"].as_py()
                if low is None or low < start or high >= end or steps.null_count:
                    mask = pc.and_(pc.greater_equal(steps, start), pc.less(steps, end))
                    batch = batch.filter(pc.fill_null(mask, False))
            if batch.num_rows:
                yield batch

    # -- export path --------------------------------------------------------------------------

    def parquet_history(self) -> list[str]:
        """URLs of the run's exported history. `liveData` is not selected: the live tail is
        paged by step above the last exported step, so one object per live row is not needed."""
        run = self._run_field(
            queries.RUN_PARQUET_HISTORY,
            {"entity": self._run.entity, "project": self._run.project,
             "runName": self._run.id, "liveKeys": [STEP]},
        )
        ph = run.get("parquetHistory") or {}
        return list(ph.get("parquetUrls") or [])

    def plan(self, use_parquet: bool) -> tuple[list[str], int]:
        """What a history export needs, in one request: the exported Parquet URLs (when
        `use_parquet`) and the last step. The system-metric row count comes along and is kept
        on the run for `system_metric_strings`, which then needs a single request too."""
        try:
            run = self._run_field(queries.RUN_HISTORY_PLAN, {**self._name_vars(), "parquet": use_parquet})
        except WandbQueryError:
            # A server without `eventsLineCount`: ask for the parts one by one.
            return (self.parquet_history() if use_parquet else []), self.last_step()
        keys = run.get("historyKeys") or {}
        last = keys.get("lastStep") if isinstance(keys, dict) else None
        count = run.get("eventsLineCount")
        self._run._events_line_count_hint = None if count is None else int(count)
        urls = list((run.get("parquetHistory") or {}).get("parquetUrls") or [])
        return urls, -1 if last is None else int(last)

    def iter_batches(self, min_step: int | None, max_step: int | None, page_size: int,
                     parquet_batch_rows: int, tmp_dir: str | os.PathLike | None,
                     use_parquet: bool) -> Iterator[pa.RecordBatch]:
        lo = max(0, int(min_step or 0))
        urls, last_step = self.plan(use_parquet)
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
        end = last_step + 1 if max_step is None else min(last_step + 1, int(max_step))
        yield from self._live_batches(start, end, page_size)

    # -- system metrics -----------------------------------------------------------------------

    def events_line_count(self) -> int | None:
        try:
            run = self._run_field(queries.RUN_EVENTS_LINE_COUNT, self._name_vars())
        except WandbQueryError:
            return None  # a server without the field: fall back to a large sample count
        value = run.get("eventsLineCount")
        return None if value is None else int(value)

    def _name_vars(self) -> dict[str, Any]:
        return {"entity": self._run.entity, "project": self._run.project, "name": self._run.id}

    def system_metric_strings(self) -> list[str]:
        """Every system-metric row. With a row count from `plan` (or an earlier call), one
        request asks for that many rows and the count again; a run that logged more since then
        is asked again with the new count, so nothing is ever down-sampled away."""
        samples = self._run._events_line_count_hint
        if samples is None:
            samples = self.events_line_count()
            if samples == 0:
                return []
            if samples is None:  # a server without the field: ask for everything, uncounted
                run = self._run_field(queries.RUN_FULL_EVENTS, {**self._name_vars(), "samples": LARGE_SAMPLES})
                return run.get("events") or []
        for _ in range(3):
            run = self._run_field(queries.RUN_COUNTED_EVENTS, {**self._name_vars(), "samples": max(1, samples)})
            strings = run.get("events") or []
            expected = int(run.get("eventsLineCount") or 0)
            self._run._events_line_count_hint = expected
            if len(strings) == expected:
                return strings
            if expected <= samples:
                break
            samples = expected  # the run logged more since the count was read
        raise WandbIncompleteDataError(
            f"run {self._run._path_str}: server holds {expected} system-metric rows "
            f"but events(samples: {max(1, samples)}) returned {len(strings)}"
        )

    def iter_system_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        strings = self.system_metric_strings()
        for i in range(0, len(strings), batch_rows):
            yield strings_to_batch(strings[i: i + batch_rows], first=("_timestamp", "_runtime"))


def _read_parquet(path: str, min_step: int, max_step: int | None,
                  batch_rows: int) -> Iterable[tuple[pa.RecordBatch | None, int | None]]:
    """Batches of one exported file filtered to [min_step, max_step), each with the file's
    highest step seen so far in it (unfiltered, for the live-tail boundary)."""
    # Read in 64 KiB pieces, without pre-buffering: an export is often one large row group,
    # which would otherwise be held whole (peak memory growing with the run's length).
    pf = pq.ParquetFile(path, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
    # Wide files (thousands of keys) in fewer rows per batch: memory stays flat in the keys.
    batch_rows = max(256, min(batch_rows, PARQUET_BATCH_CELLS // max(1, pf.metadata.num_columns)))
    for raw in pf.iter_batches(batch_size=batch_rows, use_threads=False):
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


class HistoryScan:
    """Iterable of history rows (dicts) from `Run.scan_history`."""

    def __init__(self, reader: HistoryReader, keys: list[str] | None, page_size: int,
                 min_step: int | None, max_step: int | None):
        self._args = (reader, keys, page_size, min_step, max_step)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader, keys, page_size, min_step, max_step = self._args
        return reader.scan_rows(keys, page_size, min_step, max_step)
