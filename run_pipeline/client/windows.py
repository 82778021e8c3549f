"""Paging history by step windows (pure functions): the windows, the page filters that keep a
misbehaving server from duplicating or multiplying rows, a one-page-ahead prefetch, and the
sampling of a sampled read."""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from run_pipeline.client.errors import WandbIncompleteDataError

#: Windows never grow past this many steps (bounds one page when density jumps).
MAX_WINDOW_FACTOR = 64
#: Requests for one step window before the server is held to be misbehaving (a page that keeps
#: coming back full however small the window); the export fails, naming the window.
MAX_FETCHES_PER_WINDOW = 40

_STEP_IN_ROW = re.compile(r'"_step"\s*:\s*(-?[0-9.eE+]+)')


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
    fetched again: no row is ever lost to truncation. `fetch` returns only rows inside its
    window, so a server that ignores the window cannot make pages look full; one that keeps
    answering full pages is stopped after `MAX_FETCHES_PER_WINDOW` requests for one window.
    """
    page_size = max(1, int(page_size))
    max_window = page_size * MAX_WINDOW_FACTOR
    window = page_size
    a = start
    while a < end:
        b = min(a + window, end)
        samples = min(b - a, page_size) + 1
        rows = fetch(a, b, samples)
        fetches = 1
        while len(rows) >= samples:
            if fetches >= MAX_FETCHES_PER_WINDOW:
                raise WandbIncompleteDataError(
                    f"the server kept answering full pages for steps [{a}, {b}) after {fetches} "
                    f"requests (asked for {samples} rows)")
            if b - a > 1:
                b = a + (b - a) // 2
                samples = min(b - a, page_size) + 1
            else:
                samples *= 4
            rows = fetch(a, b, samples)
            fetches += 1
        if rows:
            yield rows
            window = max(1, min(max_window, (b - a) * page_size // len(rows)))
        else:
            window = min(max_window, window * 2)
        a = b


def row_steps_within(strings: list[str], a: int, b: int) -> list[str]:
    """The row strings whose `_step` lies in [a, b) (for a server that ignored the window)."""
    out = []
    for s in strings:
        m = _STEP_IN_ROW.search(s)
        try:
            step = int(float(m.group(1))) if m else None
        except ValueError:
            step = None
        if step is None or a <= step < b:
            out.append(s)
    return out


def without_repeats(strings: list[str]) -> list[str]:
    """A page without rows repeated verbatim (same step, same content: a server or proxy that
    sent a row twice). Rows that share a step but differ are kept, as W&B keeps them."""
    if len(set(strings)) == len(strings):
        return strings
    seen: set[str] = set()
    return [s for s in strings if not (s in seen or seen.add(s))]


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


def downsample(rows: list, samples: int) -> list:
    """At most `samples` rows, evenly spaced, first and last kept (what a sampled read gives)."""
    samples = max(0, int(samples))
    n = len(rows)
    if n <= samples:
        return rows
    if samples <= 1:
        return rows[:samples]
    return [rows[round(i * (n - 1) / (samples - 1))] for i in range(samples)]
