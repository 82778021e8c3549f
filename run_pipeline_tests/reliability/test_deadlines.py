"""A server that trickles its answer (one byte a second, in the headers or in the body) cannot
hold a request past the retry budget: each request has a wall-clock deadline, not only a
timeout per socket read. Measured with a real loopback server; the bound is generous (the
undefended client waited as long as the server kept sending)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

from run_pipeline.client import RetryPolicy, WandbGaveUpError
from run_pipeline.client.transport import Transport

from ..loopback import QuietHandler, serve

BODY = b'{"data": {"viewer": {"id": "x"}}}' + b" " * 200


@contextmanager
def trickling_server(where: str):
    """Answers every request one byte a second: the whole response ("headers"), or the
    headers at once and then the body ("body"). Stops when the client hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve(conn):
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            try:
                if where == "body":
                    conn.sendall(head)
                    slow = BODY
                else:
                    slow = head + BODY
                for i in range(len(slow)):
                    if stop.wait(1.0):
                        return
                    conn.sendall(slow[i:i + 1])
            except OSError:
                return

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_fails_the_request_within_the_budget(where):
    budget = 3.0
    with trickling_server(where) as base:
        transport = Transport(base, "k" * 40, timeout=2.0, retry=RetryPolicy(budget=budget, backoff_base=0.1))
        started = time.monotonic()
        with pytest.raises(WandbGaveUpError) as info:
            transport.graphql("query Viewer { viewer { id } }")
        took = time.monotonic() - started
    assert "no complete answer within the budget of 3s" in str(info.value)
    assert took < budget + 5, f"held {took:.1f}s with a budget of {budget}s"


def test_a_quick_answer_after_a_cut_off_one_reuses_nothing_broken():
    """After the watchdog shuts a connection, the next request gets a fresh one and works."""
    calls = []

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's API
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            body = BODY.strip()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if len(calls) == 1:  # the first answer stalls after its headers
                time.sleep(4)
            self.wfile.write(body)

    with serve(Handler) as base:
        transport = Transport(base, "k" * 40, timeout=10.0, retry=RetryPolicy(budget=1.5, backoff_base=0.1))
        with pytest.raises(WandbGaveUpError):
            transport.graphql("query Viewer { viewer { id } }")
        transport.retry = RetryPolicy(budget=30)
        assert transport.graphql("query Viewer { viewer { id } }") == {"viewer": {"id": "x"}}


def _download_handler(chunk: bytes, chunks: int, pause: float) -> type[QuietHandler]:
    """Answers GET with `chunks` pieces of `chunk`, `pause` seconds apart."""
    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802 - http.server's API
            self.send_response(200)
            self.send_header("Content-Length", str(len(chunk) * chunks))
            self.end_headers()
            try:
                for _ in range(chunks):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:
                pass

    return Handler


def test_a_large_download_arriving_steadily_may_outlast_the_budget_a_trickle_may_not(tmp_path):
    policy = RetryPolicy(budget=1.5, max_attempts=1)
    with serve(_download_handler(b"x" * (1 << 20), chunks=6, pause=0.5)) as base:  # 6 MiB at ~2 MiB/s: 3 s
        transport = Transport(base, "k" * 40, timeout=5.0, retry=policy)
        assert transport.download(f"{base}/file", tmp_path / "steady") == 6 << 20
    with serve(_download_handler(b"x", chunks=600, pause=0.01)) as base:  # 100 bytes a second
        transport = Transport(base, "k" * 40, timeout=5.0, retry=policy)
        with pytest.raises(WandbGaveUpError, match="no complete answer within the budget"):
            transport.download(f"{base}/file", tmp_path / "trickle")


def test_a_sooner_deadline_set_after_a_later_one_still_cuts_its_request_off_on_time():
    """The watchdog is woken only for a deadline sooner than the one it waits for: a short
    deadline set while a long one is watched must still fire on time, and attempts that ended
    are not kept."""
    from run_pipeline.client import deadline

    with deadline.deadline(time.monotonic() + 60) as long_one:
        for _ in range(500):  # finished attempts the watchdog never woke for
            with deadline.deadline(time.monotonic() + 30):
                pass
        assert len(deadline._watchdog._heap) <= 2 * len(deadline._watchdog._live) + 64
        started = time.monotonic()
        with deadline.deadline(time.monotonic() + 0.3) as short_one:
            while not short_one.expired and time.monotonic() - started < 5:
                time.sleep(0.01)
        assert short_one.expired
        assert time.monotonic() - started < 2
    assert not long_one.expired
