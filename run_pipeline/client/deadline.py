"""A wall-clock deadline for each HTTP request.

requests' timeout bounds each socket read, not the request: a server that sends one byte a
second holds a request for as long as it likes. Here every connection that starts a request
while a deadline is set (`deadline(...)`, per thread) is watched by one daemon thread, which
shuts its socket down when the deadline passes; the blocked read then fails at once and the
caller's retry loop sees a failed attempt. The connection classes are urllib3's own, with one
hook in `request`, installed through requests' `HTTPAdapter`.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

_current = threading.local()


class _Attempt:
    """One request attempt under a deadline: the connections it used, and whether the
    watchdog cut it off."""

    __slots__ = ("deadline", "connections", "sockets", "expired")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.connections: list[urllib3.connection.HTTPConnection] = []
        # A response that closes its connection after it (HTTP/1.0, `Connection: close`) is
        # read from a socket the connection no longer holds: kept here.
        self.sockets: list[socket.socket] = []
        self.expired = False


class _Watchdog:
    """One daemon thread that shuts down the sockets of attempts past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        # When the thread wakes next by itself (None: it waits to be told). A new deadline no
        # earlier than that needs no wake-up: every request would otherwise wake the thread
        # (and hand it the GIL) only for it to go back to sleep.
        self._wakes_at: float | None = None

    def watch(self, attempt: _Attempt) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (attempt.deadline, token, attempt))
            self._live.add(token)
            if len(self._heap) > 2 * len(self._live) + 64:  # finished attempts the thread has not met
                self._heap = [entry for entry in self._heap if entry[1] in self._live]
                heapq.heapify(self._heap)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="run_pipeline-deadlines", daemon=True)
                self._thread.start()
            if self._wakes_at is None or attempt.deadline < self._wakes_at:
                self._cond.notify()
            return token

    def unwatch(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wakes_at = None
                    self._cond.wait()
                    continue
                self._wakes_at = self._heap[0][0]
                wait = self._wakes_at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                at, token, attempt = heapq.heappop(self._heap)
                if attempt.deadline > at:  # extended meanwhile (see `extend`)
                    heapq.heappush(self._heap, (attempt.deadline, token, attempt))
                    continue
                self._live.discard(token)
                attempt.expired = True
                _shut(attempt)


def _shut(attempt: _Attempt) -> None:
    socks = [getattr(conn, "sock", None) for conn in attempt.connections] + attempt.sockets
    for sock in socks:
        if sock is None:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread; close() may not
        except OSError:
            pass


_watchdog = _Watchdog()


@contextmanager
def deadline(at: float) -> Iterator[_Attempt]:
    """Requests this thread starts inside the block must finish (body read included) by the
    monotonic time `at`; yields the attempt, whose `expired` says whether it was cut off."""
    attempt = _Attempt(at)
    previous = getattr(_current, "attempt", None)
    _current.attempt = attempt
    token = _watchdog.watch(attempt)
    try:
        yield attempt
    finally:
        _watchdog.unwatch(token)
        _current.attempt = previous


def extend(seconds: float) -> None:
    """Move this thread's current deadline to at least `seconds` from now (for a transfer that
    shows it is making progress; the watchdog picks the new time up when the old one comes)."""
    attempt = getattr(_current, "attempt", None)
    if attempt is not None and not attempt.expired:
        attempt.deadline = max(attempt.deadline, time.monotonic() + seconds)


def _register(conn: urllib3.connection.HTTPConnection, sock: socket.socket | None = None) -> None:
    attempt = getattr(_current, "attempt", None)
    if attempt is None:
        return
    if sock is None:
        attempt.connections.append(conn)
    else:
        attempt.sockets.append(sock)
    if attempt.expired or time.monotonic() >= attempt.deadline:
        attempt.expired = True
        _shut(attempt)


class _Watched:
    """The hooks: a connection is watched from the request it sends, and the socket its
    response arrives on from the moment the response starts."""

    def request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib3's signature
        _register(self)
        return super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib3's signature
        if self.sock is not None:
            _register(self, self.sock)
        return super().getresponse(*args, **kwargs)


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections honour `deadline` (direct and through a proxy)."""

    def init_poolmanager(self, *args, **kwargs):  # noqa: ANN002, ANN003 - requests' signature
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # noqa: ANN001, ANN003 - requests' signature
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have connection classes of their own
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager
