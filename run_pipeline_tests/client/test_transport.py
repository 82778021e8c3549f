"""Transport against the emulator: retries under injected faults within a time budget, rate-limit
pacing, the error taxonomy, and the API key kept out of logs and exceptions."""

from __future__ import annotations

import base64
import logging
import socket
import time
import traceback

import pytest
import requests

from run_pipeline.client import (
    Api,
    RetryPolicy,
    WandbAuthError,
    WandbClientError,
    WandbGaveUpError,
    WandbNotFoundError,
    WandbQueryError,
    WandbRateLimitError,
    WandbTransportError,
    batch_to_rows,
)

from ..loopback import QuietHandler, serve
from .conftest import norm

ALL_PATHS = ("/graphql", "/files/", "/storage/")


def make_api(emulator, budget=30.0, timeout=(2.0, 5.0), key=None, base_url=None):
    return Api(api_key=key or emulator.api_key, base_url=base_url or emulator.base_url,
               environ={}, timeout=timeout,
               retry=RetryPolicy(budget=budget, backoff_base=0.05, backoff_cap=0.5))


def secrets_of(emulator):
    return (emulator.api_key, base64.b64encode(f"api:{emulator.api_key}".encode()).decode())


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def test_export_is_exact_under_injected_faults(emulator, dataset, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.set_faults(seed=7, rates={"429": 0.05, "500": 0.05, "502": 0.05, "503": 0.05,
                                       "reset": 0.05, "truncate": 0.05, "slow": 0.03},
                        paths=ALL_PATHS, retry_after=0.2, slow_seconds=1.5)
    api = make_api(emulator, timeout=(1.0, 0.5))
    start = time.monotonic()
    picked = [d for d in dataset if d.project == "llm-finetune"][:6]
    for d in picked:
        run = api.run(d.path)
        rows = [r for b in run.iter_history_batches(page_size=100) for r in batch_to_rows(b)]
        assert norm(rows) == norm(d.history()), d.path
        assert run.config == d.meta["config"]
    runs = api.runs("demo/llm-finetune", per_page=2)
    assert len(list(runs)) == len([d for d in dataset if d.project == "llm-finetune"])
    elapsed = time.monotonic() - start
    assert api._transport.stats["retries"] > 0
    assert sum(emulator.app.faults.injected.values()) > 0
    assert elapsed < 60
    assert "retry" in caplog.text
    for secret in secrets_of(emulator):
        assert secret not in caplog.text


def test_file_downloads_retry_truncation_and_resets(emulator, dataset, tmp_path):
    d = max(dataset, key=lambda d: sum(1 for p in (d.dir / "files").rglob("*") if p.is_file()))
    emulator.set_faults(seed=3, rates={"truncate": 0.3, "reset": 0.2, "503": 0.1},
                        paths=("/files/", "/storage/"))
    api = make_api(emulator)
    run = api.run(d.path)
    for f in run.files():
        assert f.read_bytes() == (d.dir / "files" / f.name).read_bytes()
        with f.download(tmp_path, replace=True) as fh:
            assert fh.name.endswith(f.name)
        assert (tmp_path / f.name).read_bytes() == (d.dir / "files" / f.name).read_bytes()
    assert api._transport.stats["retries"] > 0
    assert not list(tmp_path.rglob("*.part-*"))


def test_gives_up_within_the_budget_with_a_clear_error(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.set_faults(rates={"503": 1.0})
    api = make_api(emulator, budget=2.0)
    start = time.monotonic()
    with pytest.raises(WandbGaveUpError) as info:
        api.run("demo/llm-finetune/whatever")
    elapsed = time.monotonic() - start
    assert elapsed < 3.0
    err = info.value
    assert isinstance(err, WandbTransportError) and not isinstance(err, WandbRateLimitError)
    assert err.status == 503 and err.attempts > 1
    assert "gave up" in str(err) and "503" in str(err) and "/graphql" in str(err)
    assert err.__cause__ is not None
    for secret in secrets_of(emulator):
        assert secret not in full_text(err) and secret not in caplog.text


def test_persistent_429_is_a_rate_limit_error(emulator):
    emulator.set_faults(rates={"429": 1.0}, retry_after=0.3)
    api = make_api(emulator, budget=1.5)
    start = time.monotonic()
    with pytest.raises(WandbRateLimitError) as info:
        api.projects("demo")[0]
    assert time.monotonic() - start < 2.5
    assert info.value.status == 429
    # Retry-After (0.3 s) was honoured, not the 0.05 s backoff: few attempts fit in 1.5 s.
    assert 2 <= info.value.attempts <= 6


def test_rate_limit_headers_pace_requests(emulator, dataset):
    emulator.set_rate_limit(5)
    api = make_api(emulator)
    start = time.monotonic()
    for d in dataset[:15]:
        assert api.run(d.path).id == d.run_id
    elapsed = time.monotonic() - start
    # 15 requests at 5/s need ~2 s; pacing on RateLimit-Remaining keeps 429s rare.
    assert elapsed >= 1.5
    assert api._transport.stats["retries"] <= 3


def test_bad_key_is_an_auth_error_and_not_retried(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "wrongkey" * 5
    api = make_api(emulator, key=bad)
    with pytest.raises(WandbAuthError) as info:
        api.run("demo/llm-finetune/abcdefgh")
    if "viewer-null" in emulator.profiles:
        # HTTP 200 with a null run, then a null viewer: the key is bad, the run is not missing.
        assert api._transport.stats["requests"] == 2
        assert "invalid API key" in str(info.value)
    else:
        assert api._transport.stats["requests"] == 1
        assert "401" in str(info.value)
    assert bad not in full_text(info.value) and bad not in caplog.text
    with pytest.raises(WandbAuthError):
        _ = make_api(emulator, key=bad).default_entity


def test_graphql_errors_are_query_errors_and_not_retried(api):
    with pytest.raises(WandbQueryError) as info:
        api._transport.graphql("query Broken { project(name: \"x\") { noSuchField } }")
    assert info.value.errors and "noSuchField" in str(info.value)
    assert info.value.status == 400
    assert api._transport.stats["requests"] == 1
    assert isinstance(info.value, WandbClientError)
    # A resolver error arrives as HTTP 200 carrying `errors`: also final, also a query error.
    with pytest.raises(WandbQueryError) as info:
        api._transport.graphql(
            'mutation { deleteRun(input: {id: "bogus"}) { clientMutationId } }')
    assert info.value.status == 200 and info.value.errors
    assert api._transport.stats["requests"] == 2


def test_not_found_is_not_retried(api):
    with pytest.raises(WandbNotFoundError):
        api.run("demo/llm-finetune/missing0")
    # The lookup, then one viewer query that tells "not found" from "bad key" (cached).
    assert api._transport.stats["requests"] == 2
    with pytest.raises(WandbNotFoundError):
        api.run("demo/llm-finetune/missing1")
    assert api._transport.stats["requests"] == 3
    with pytest.raises(WandbNotFoundError):
        api._transport.get_bytes(api.base_url + "/files/demo/llm-finetune/missing0/none.txt")


def test_connection_refused_gives_up_as_transport_error(emulator):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = make_api(emulator, budget=1.0, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(WandbGaveUpError) as info:
        api.run("demo/p/r")
    # A server that never answered is not retried: the first refusal ends the call.
    assert f"cannot reach the server at http://127.0.0.1:{port} (connection refused)" in str(info.value)
    assert info.value.attempts == 1 and api._transport.stats["retries"] == 0
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert emulator.api_key not in full_text(info.value)


def test_a_server_that_answered_before_keeps_the_retry_budget(tmp_path):
    from run_pipeline.emulator.sample import generate
    from run_pipeline.emulator.server import EmulatorServer

    generate(tmp_path / "ds", projects=1, runs=1, steps=5)
    server = EmulatorServer(tmp_path / "ds").start()
    api = Api(api_key=server.api_key, base_url=server.base_url, retry=RetryPolicy(budget=2.0, backoff_cap=0.5))
    assert api.default_entity == "demo"
    server.stop()
    with pytest.raises(WandbGaveUpError) as info:
        api.project("anything", "demo")
    assert info.value.attempts > 1 and "gave up" in str(info.value)


def test_key_absent_from_logs_reprs_and_tracebacks_on_failure(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.set_faults(rates={"500": 1.0})
    api = make_api(emulator, budget=0.5)
    with pytest.raises(WandbGaveUpError) as info:
        api.run("demo/llm-finetune/abcdefgh")
    text = full_text(info.value) + caplog.text + repr(api) + repr(api._transport)
    for secret in secrets_of(emulator):
        assert secret not in text


def _quick_retrying_api(base_url: str) -> Api:
    """A client of a loopback server that retries at once (the tests below cut one answer)."""
    return Api(api_key="k" * 40, base_url=base_url, environ={}, timeout=(2.0, 5.0),
               retry=RetryPolicy(budget=10.0, backoff_base=0.01, backoff_cap=0.05))


def test_large_graphql_body_read_whole_and_a_cut_one_retried():
    """A body of several read pieces arrives whole; one cut off mid-body is retried."""
    import json

    rows = [json.dumps({"_step": i, "note": "x" * 200}) for i in range(12_000)]  # ~3 MiB
    body = json.dumps({"data": {"project": {"run": {"history": rows}}}}).encode()
    sent = []

    class Handler(QuietHandler):
        def do_POST(self):  # noqa: N802 - http.server's API
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = not sent
            sent.append(cut)
            self.wfile.write(body[: len(body) * 2 // 3] if cut else body)
            if cut:
                self.close_connection = True

    with serve(Handler) as base:
        api = _quick_retrying_api(base)
        data = api._transport.graphql("query HistoryPage { project { run { history } } }", {})
    assert sent == [True, False]
    assert api._transport.stats["retries"] == 1
    assert data["project"]["run"]["history"] == rows


@pytest.mark.parametrize("memory_limit", [1 << 20, 1000])
def test_a_download_kept_in_memory_or_written_to_a_file_is_whole_and_a_cut_one_retried(tmp_path, memory_limit):
    """A file no larger than `memory_limit` comes back as bytes and touches no file; a larger
    one is written to `dest`. Either way a body cut off mid-way is fetched again."""
    body = bytes(range(256)) * 400  # 100 KiB
    sent = []

    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802 - http.server's API
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = not sent
            sent.append(cut)
            self.wfile.write(body[: len(body) // 3] if cut else body)
            if cut:
                self.close_connection = True

    dest = tmp_path / "export.parquet"
    with serve(Handler) as base:
        api = _quick_retrying_api(base)
        got = api._transport.download("/storage/export.parquet", dest, memory_limit=memory_limit)
    assert sent == [True, False]
    assert api._transport.stats["retries"] == 1
    if memory_limit >= len(body):
        assert got == body
        assert not dest.exists()
    else:
        assert got == len(body)
        assert dest.read_bytes() == body
