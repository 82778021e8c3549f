"""Run history as W&B serves it: the run's exported Parquet first (`parquetHistory`), then the
live tail above its last step over `history(minStep, maxStep)` or `sampledHistory`; plus the
full system-metric (`events`) stream. Every reader (`scan_history`, `history`, the export's
record batches) takes the same two paths, so a server that answers windowed history only for
steps it has not exported yet loses nothing. Typing of the batches is in `batches.py`, the
step windows of live paging in `windows.py`, what an exported file's bytes say about it in
`parquet_checks.py`.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from run_pipeline.client import queries
from run_pipeline.client.auth import display_url
from run_pipeline.client.batches import (
    STEP,
    batch_to_rows,
    normalize_batch,
    parse_rows,
    strings_to_batch,
)
from run_pipeline.client.errors import (
    WandbAuthError,
    WandbClientError,
    WandbIncompleteDataError,
    WandbNotFoundError,
    WandbQueryError,
)
from run_pipeline.client.parquet_checks import footer_max_step, parquet_problem
from run_pipeline.client.windows import (
    page_windows,
    prefetch,
    row_steps_within,
    without_repeats,
)

if TYPE_CHECKING:
    from run_pipeline.client.transport import Transport

#: Bytes read at a time from each column of an exported Parquet file.
PARQUET_READ_BUFFER = 64 * 1024
#: At most about this many values (rows × columns) per batch read from an exported file.
PARQUET_BATCH_CELLS = 8_192 * 256
#: Live pages fetched, and pages parsed, ahead of the writer: while it writes a row group (a
#: pause of up to a few hundred milliseconds on a long run) the fetching and parsing threads
#: go on for this many pages instead of stopping after one (a page is about 1 MB of JSON).
LIVE_DEPTH = 4
#: Exported files of at most this many columns are read a batch ahead (see `_read_parquet`).
READ_AHEAD_MAX_COLUMNS = 256
#: Without `eventsLineCount`, ask for this many system-metric rows.
LARGE_SAMPLES = 10_000_000
#: An exported file the server says is at most this large is downloaded into memory (a small
#: run's file: 2,000 steps of 30 metrics are about 0.5 MB); a larger one goes to a temporary
#: file, so peak memory does not grow with a run's length.
MEMORY_DOWNLOAD_MAX = 4 * 1024 * 1024
#: Bytes of an exported file's end read to learn its last step before downloading it.
FOOTER_PROBE_BYTES = 64 * 1024
#: Attempts at one exported Parquet file that arrives empty, cut or corrupt.
DOWNLOAD_ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------
# Readers bound to one run


@dataclass(frozen=True)
class HistoryPlan:
    """What the server said about a run's history in one request: its exported Parquet files
    (empty when it lists none), its last step (-1 for none) and its system-metric row count
    (None when the server does not report it)."""

    parquet_urls: tuple[str, ...]
    last_step: int
    events_line_count: int | None


class HistoryReader:
    """History and system-metric readers for one run (used through `Run`'s methods)."""

    def __init__(self, transport: Transport, entity: str, project: str, run_id: str):
        self._transport = transport
        self._entity, self._project, self.run_id = entity, project, run_id
        self._path = f"{entity}/{project}/{run_id}"
        # System-metric row count learned by the last plan: lets the system-metric read that
        # follows a history export go in one request.
        self._events_line_count: int | None = None
        # System-metric rows a plan asked for along the way (`plan(with_events=True)`), whole
        # by its count: the system-metric read that follows takes them with no request.
        self._events: list[str] | None = None

    def _run_field(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        data = self._transport.graphql(query, variables)
        run = (data.get("project") or {}).get("run")
        if run is None:
            raise WandbNotFoundError(f"run {self._path} not found")
        return run

    def _vars(self, **extra: Any) -> dict[str, Any]:
        return {"entity": self._entity, "project": self._project, "run": self.run_id, **extra}

    def _name_vars(self, **extra: Any) -> dict[str, Any]:
        return {"entity": self._entity, "project": self._project, "name": self.run_id, **extra}

    # -- live pages ---------------------------------------------------------------------------

    def fetch_history_page(self, a: int, b: int, samples: int) -> list[str]:
        run = self._run_field(
            queries.HISTORY_PAGE, self._vars(minStep=a, maxStep=b, pageSize=samples)
        )
        strings = run.get("history") or []
        if len(strings) > samples:  # the server ignored the page size, perhaps the window too
            strings = row_steps_within(strings, a, b)
        return without_repeats(strings)

    def fetch_sampled_page(self, keys: list[str], a: int, b: int, samples: int) -> list[dict]:
        """Rows of [a, b) that have every key in `keys`. `maxStep` is inclusive on current
        servers and exclusive on servers older than 0.65: asking for [a, b] and one row more
        than `samples`, then keeping [a, b), is right for both (a dense window never looks
        cut off because of the boundary row)."""
        spec = json.dumps({"keys": keys, "minStep": a, "maxStep": b, "samples": samples + 1})
        run = self._run_field(queries.SAMPLED_HISTORY_PAGE, self._vars(spec=spec))
        pages = run.get("sampledHistory") or [[]]
        return [r for r in (pages[0] or []) if isinstance(r.get(STEP), (int, float))
                and a <= r[STEP] < b]

    def last_step(self) -> int:
        run = self._run_field(queries.RUN_HISTORY_KEYS, self._name_vars())
        keys = run.get("historyKeys") or {}
        last = keys.get("lastStep") if isinstance(keys, dict) else None
        return -1 if last is None else int(last)

    def _live_batches(self, start: int, end: int, page_size: int) -> Iterator[pa.RecordBatch]:
        """The live pages of [start, end) as batches, in a pipeline of three: one thread
        fetches pages, another parses them (pyarrow.json, like the Parquet writer, releases
        the GIL), while the consumer writes the batch before."""
        def batches() -> Iterator[pa.RecordBatch]:
            for strings in prefetch(page_windows(self.fetch_history_page, start, end, page_size), LIVE_DEPTH):
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
        yield from prefetch(batches(), LIVE_DEPTH)

    # -- the plan and the exported Parquet -------------------------------------------------------

    def parquet_history(self) -> list[str]:
        """URLs of the run's exported history. `liveData` is not selected: the live tail is
        paged by step above the last exported step, so one object per live row is not needed."""
        run = self._run_field(
            queries.RUN_PARQUET_HISTORY,
            {"entity": self._entity, "project": self._project, "runName": self.run_id,
             "liveKeys": [STEP]},
        )
        ph = run.get("parquetHistory") or {}
        return list(ph.get("parquetUrls") or [])

    def plan(self, use_parquet: bool = True, with_events: bool = False) -> HistoryPlan:
        """What reading the run's history needs, in one request: the exported Parquet URLs
        (when `use_parquet`), the last step and the system-metric row count; `with_events`
        also asks for every system-metric row, kept for the next `system_metric_strings()`
        when there are as many as the count says (an export reads both: one request less)."""
        try:
            run = self._run_field(queries.RUN_HISTORY_PLAN, self._name_vars(
                parquet=use_parquet, events=with_events, samples=LARGE_SAMPLES if with_events else None))
        except WandbQueryError:
            if with_events:  # a server that refuses the rows in this query: ask without them
                return self.plan(use_parquet)
            # A server without `eventsLineCount`: ask for the parts one by one.
            urls = self.parquet_history() if use_parquet else []
            return HistoryPlan(tuple(urls), self.last_step(), None)
        keys = run.get("historyKeys") or {}
        last = keys.get("lastStep") if isinstance(keys, dict) else None
        count = run.get("eventsLineCount")
        self._events_line_count = None if count is None else int(count)
        events = run.get("events") if with_events else None
        whole = count is not None and isinstance(events, list) and len(events) == int(count)
        self._events = events if whole else None
        urls = (run.get("parquetHistory") or {}).get("parquetUrls") or []
        return HistoryPlan(tuple(urls), -1 if last is None else int(last), self._events_line_count)

    def _download(self, url: str, path: str) -> str | bytes:
        """Download one exported file and prove it is a whole Parquet file (magic bytes at both
        ends, a footer that parses); an empty, cut or corrupt file is fetched again. Returns
        `path`, or the file's bytes when it was small enough to keep in memory."""
        problem = ""
        for _ in range(DOWNLOAD_ATTEMPTS):
            got = self._transport.download(url, path, memory_limit=MEMORY_DOWNLOAD_MAX)
            source, size = (got, len(got)) if isinstance(got, bytes) else (path, got)
            problem = parquet_problem(source, size)
            if not problem:
                return source
        raise WandbIncompleteDataError(
            f"run {self._path}: exported history {display_url(url)} is not a readable Parquet file "
            f"after {DOWNLOAD_ATTEMPTS} downloads ({problem})")

    def _remote_max_step(self, url: str) -> int | None:
        """The highest `_step` of a remote exported file, read from its footer's statistics by
        a range request; None when that cannot be told without downloading it."""
        try:
            tail = self._transport.get_tail(url, FOOTER_PROBE_BYTES)
        except WandbClientError:
            return None
        return footer_max_step(tail)

    def _parquet_batches(self, plan: HistoryPlan, lo: int, hi: int | None, batch_rows: int,
                         tmp_dir: str | os.PathLike | None, use_parquet: bool,
                         columns: list[str] | None = None,
                         ) -> Iterator[tuple[pa.RecordBatch | None, int | None]]:
        """Batches of the plan's exported files in [lo, hi), each with the highest step seen
        so far (unfiltered: where the live tail starts). A signed URL that has expired (403) is
        asked for again once."""
        urls = list(plan.parquet_urls)
        replanned = False
        i = 0
        while i < len(urls):
            if lo > 0:
                # An incremental read: a file that holds no step at or above `lo` is not
                # downloaded (the warehouse has all of it already).
                top = self._remote_max_step(urls[i])
                if top is not None and top < lo:
                    yield None, top
                    i += 1
                    continue
            # One temporary file per download (no directory to create and remove per run),
            # created only when the file is too large to keep in memory.
            path = os.path.join(tmp_dir or tempfile.gettempdir(), f"run_pipeline_parquet_{uuid.uuid4().hex}.parquet")
            try:
                try:
                    source = self._download(urls[i], path)
                except WandbAuthError:
                    if replanned:
                        raise
                    replanned = True
                    fresh = self.plan(use_parquet).parquet_urls
                    if len(fresh) != len(urls):
                        raise WandbIncompleteDataError(
                            f"run {self._path}: the server listed {len(urls)} exported history "
                            f"files, then {len(fresh)} when asked again after an expired URL")
                    urls = list(fresh)
                    continue
                try:
                    yield from _read_parquet(source if isinstance(source, str) else pa.BufferReader(source),
                                             lo, hi, batch_rows, columns)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise WandbIncompleteDataError(
                        f"run {self._path}: exported history {display_url(urls[i])} "
                        f"could not be read: {exc}") from exc
            finally:
                try:
                    os.unlink(path)
                except FileNotFoundError:  # kept in memory
                    pass
            i += 1

    # -- readers --------------------------------------------------------------------------------

    def iter_batches(self, min_step: int | None, max_step: int | None, page_size: int,
                     parquet_batch_rows: int, tmp_dir: str | os.PathLike | None,
                     use_parquet: bool, with_events: bool = False) -> Iterator[pa.RecordBatch]:
        lo = max(0, int(min_step or 0))
        plan = self.plan(use_parquet, with_events)
        top: int | None = None
        for batch, file_top in self._parquet_batches(plan, lo, max_step, parquet_batch_rows,
                                                     tmp_dir, use_parquet):
            if file_top is not None:
                top = file_top if top is None else max(top, file_top)
            if batch is not None and batch.num_rows:
                yield batch
        start = lo if top is None else max(lo, top + 1)
        end = _end(plan, max_step)
        if start < end:  # a live tail to page (no threads started for a run wholly exported)
            yield from self._live_batches(start, end, page_size)

    def scan_rows(self, keys: list[str] | None, page_size: int, min_step: int | None,
                  max_step: int | None, plan: HistoryPlan | None = None) -> Iterator[dict[str, Any]]:
        """Rows as dicts: the exported Parquet's rows first, then the live tail. With `keys`,
        only rows that have every key, each holding `_step` and those keys (W&B's meaning),
        whichever path a row came from. `plan`: one the caller already has."""
        lo = max(0, int(min_step or 0))
        plan = plan or self.plan()
        wanted = None if not keys else [STEP] + [k for k in dict.fromkeys(keys) if k != STEP]
        top: int | None = None
        for batch, file_top in self._parquet_batches(plan, lo, max_step, 8_192, None, True,
                                                     columns=wanted):
            if file_top is not None:
                top = file_top if top is None else max(top, file_top)
            if batch is None or not batch.num_rows:
                continue
            if wanted is None:
                yield from batch_to_rows(batch)
            elif all(k in batch.schema.names for k in wanted):
                rows = batch_to_rows(batch.select(wanted), drop_nulls=False)
                yield from (r for r in rows if all(r[k] is not None for k in wanted))
        start = lo if top is None else max(lo, top + 1)
        end = _end(plan, max_step)
        if wanted:
            for rows in page_windows(
                lambda a, b, s: self.fetch_sampled_page(wanted, a, b, s), start, end, page_size
            ):
                yield from rows
        else:
            for strings in page_windows(self.fetch_history_page, start, end, page_size):
                yield from parse_rows(strings)

    # -- system metrics -----------------------------------------------------------------------

    def events_line_count(self) -> int | None:
        try:
            run = self._run_field(queries.RUN_EVENTS_LINE_COUNT, self._name_vars())
        except WandbQueryError:
            return None  # a server without the field: fall back to a large sample count
        value = run.get("eventsLineCount")
        return None if value is None else int(value)

    def system_metric_strings(self) -> list[str]:
        """Every system-metric row. With a row count from `plan` (or an earlier call), one
        request asks for that many rows and the count again; a run that logged more since then
        is asked again with the new count, so nothing is ever down-sampled away."""
        if self._events is not None:
            strings, self._events = self._events, None
            return strings
        samples = self._events_line_count
        if samples is None:
            samples = self.events_line_count()
            if samples == 0:
                return []
            if samples is None:  # a server without the field: ask for everything, uncounted
                run = self._run_field(queries.RUN_FULL_EVENTS, self._name_vars(samples=LARGE_SAMPLES))
                return run.get("events") or []
        for _ in range(3):
            run = self._run_field(queries.RUN_COUNTED_EVENTS, self._name_vars(samples=max(1, samples)))
            strings = run.get("events") or []
            expected = int(run.get("eventsLineCount") or 0)
            self._events_line_count = expected
            if len(strings) == expected:
                return strings
            if expected <= samples:
                break
            samples = expected  # the run logged more since the count was read
        raise WandbIncompleteDataError(
            f"run {self._path}: server holds {expected} system-metric rows "
            f"but events(samples: {max(1, samples)}) returned {len(strings)}"
        )

    def iter_system_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        strings = self.system_metric_strings()
        for i in range(0, len(strings), batch_rows):
            yield strings_to_batch(strings[i: i + batch_rows], first=("_timestamp", "_runtime"))


def _end(plan: HistoryPlan, max_step: int | None) -> int:
    end = plan.last_step + 1
    return end if max_step is None else min(end, int(max_step))


def _read_parquet(source: str | pa.BufferReader, min_step: int, max_step: int | None, batch_rows: int,
                  columns: list[str] | None = None,
                  ) -> Iterable[tuple[pa.RecordBatch | None, int | None]]:
    """Batches of one exported file filtered to [min_step, max_step), each with the file's
    highest step seen so far in it (unfiltered, for the live-tail boundary). With `columns`,
    only those of them the file has."""
    # Read in 64 KiB pieces, without pre-buffering: an export is often one large row group,
    # which would otherwise be held whole (peak memory growing with the run's length).
    pf = pq.ParquetFile(source, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
    if columns is not None:
        names = set(pf.schema_arrow.names)
        columns = [c for c in columns if c in names]
        if STEP not in columns:
            columns = [STEP] + columns
    # Wide files (thousands of keys) in fewer rows per batch: memory stays flat in the keys.
    width = len(columns) if columns is not None else pf.metadata.num_columns
    batch_rows = max(256, min(batch_rows, PARQUET_BATCH_CELLS // max(1, width)))
    batches = _file_batches(pf, min_step, max_step, batch_rows, columns)
    # A file of several batches is read and normalized a batch ahead, in a thread, while the
    # caller writes the batch before (Parquet writing releases the GIL); one batch would only
    # pay for the thread, and a wide file would hold thousands of columns more in memory.
    if pf.metadata.num_rows > batch_rows and width <= READ_AHEAD_MAX_COLUMNS:
        return prefetch(batches)
    return batches


def _file_batches(pf: pq.ParquetFile, min_step: int, max_step: int | None, batch_rows: int,
                  columns: list[str] | None) -> Iterator[tuple[pa.RecordBatch | None, int | None]]:
    for raw in pf.iter_batches(batch_size=batch_rows, use_threads=False, columns=columns):
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
