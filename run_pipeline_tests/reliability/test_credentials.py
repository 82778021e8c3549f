"""Credentials beyond the key in headers: user info in the base URL, a key echoed in part by an
error body, a same-host redirect out of the base URL's path, and a ~/.netrc others can read."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import pyarrow.parquet as pq
import pytest

from run_pipeline.client import Api, RetryPolicy, WandbAuthError, WandbGaveUpError
from run_pipeline.client.transport import Transport

from ..loopback import QuietHandler, serve
from .helpers import ENTITY, dataset_run_ids, run_cli

KEY = "k3yQ9" + "vT4mB8xL2nR6wP1zS5hJ0cF7gD3aE9uY2iO"  # 40 characters
assert len(KEY) == 40


def key_runs(text: str, size: int = 8) -> list[str]:
    """Every run of `size` characters of the key found in `text`."""
    return [KEY[i:i + size] for i in range(len(KEY) - size + 1) if KEY[i:i + size] in text]


@contextmanager
def tiny_server(routes):
    """A loopback HTTP server: `routes(handler)` answers every GET and POST."""
    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802 - http.server's API
            routes(self)

        do_POST = do_GET

    with serve(Handler) as base:
        yield base


def _answer(handler, status: int, body: bytes, headers: dict | None = None) -> None:
    if handler.command == "POST":
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_user_info_in_the_base_url_is_never_printed_or_stored(emulator, tmp_path):
    url = emulator.base_url.replace("http://", "http://alice:s3cretPassw0rd@")
    run_id = dataset_run_ids(emulator.dataset_dir, "rl-agents")[0]
    wh = tmp_path / "wh"
    done = run_cli(["export", "--project", "rl-agents", "--entity", ENTITY, "--runs", run_id,
                    "--warehouse", str(wh)],
                   env={"WANDB_BASE_URL": url, "WANDB_API_KEY": emulator.api_key})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from {emulator.base_url} into" in done.stderr
    for text in (done.stdout, done.stderr):
        assert "s3cretPassw0rd" not in text and "alice" not in text
    (row,) = pq.read_table(next(wh.glob("runs/*/*/*/run.parquet")), columns=["url"]).to_pylist()
    assert row["url"] == f"{emulator.base_url}/{ENTITY}/rl-agents/runs/{run_id}"
    for path in wh.rglob("*"):
        if path.is_file():
            assert b"s3cretPassw0rd" not in path.read_bytes(), path
    with Api(api_key=emulator.api_key, base_url=url, environ={}) as api:
        assert "s3cret" not in repr(api) + api.base_url + api.app_url


def test_an_error_body_echoing_the_key_never_shows_a_run_of_it(caplog):
    caplog.set_level(logging.DEBUG)
    echoes = {
        # The key across the 300th character, where error texts are cut.
        "/cut": (401, ("x" * 290 + f"bad key {KEY} rejected").encode()),
        # A 12-character prefix, on the retried path, many times.
        "/prefix": (503, (f"overloaded for {KEY[:12]}… " * 20).encode()),
        "/graphql": (401, f'{{"errors": [{{"message": "{"y" * 280} key {KEY[3:30]}"}}]}}'.encode()),
    }
    with tiny_server(lambda h: _answer(h, *echoes[h.path])) as base:
        transport = Transport(base, KEY, retry=RetryPolicy(max_attempts=3, budget=5, backoff_base=0.01))
        failures = []
        with pytest.raises(WandbAuthError) as cut:
            transport.get_bytes("/cut")
        failures.append(str(cut.value))
        with pytest.raises(WandbGaveUpError) as prefix:
            transport.get_bytes("/prefix")
        failures.append(str(prefix.value))
        with pytest.raises(WandbAuthError) as graphql:
            transport.graphql("query Viewer { viewer { id } }")
        failures.append(str(graphql.value))
    assert "HTTP 401" in failures[0] and "HTTP 503" in failures[1]
    for text in failures + [r.getMessage() for r in caplog.records]:
        assert key_runs(text) == [], text


def test_a_same_host_redirect_outside_the_base_path_carries_no_key():
    seen = {}

    def routes(h):
        seen[h.path] = h.headers.get("Authorization")
        if h.path == "/api/files/out":
            _answer(h, 302, b"", {"Location": "/elsewhere/file"})
        elif h.path == "/api/files/in":
            _answer(h, 302, b"", {"Location": "/api/storage/file"})
        else:
            _answer(h, 200, b"content")

    with tiny_server(routes) as base:
        transport = Transport(base + "/api", KEY)
        assert transport.get_bytes(base + "/api/files/out") == b"content"
        assert transport.get_bytes(base + "/api/files/in") == b"content"
    assert seen["/api/files/out"] is not None and seen["/api/storage/file"] is not None
    assert seen["/elsewhere/file"] is None


def test_a_netrc_readable_by_others_is_used_with_one_warning(tmp_path, caplog):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login user\n  password {KEY}\n")
    os.chmod(netrc, 0o644)
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        with Api(base_url="http://127.0.0.1:9", environ={}, netrc_path=netrc) as api:
            assert api._transport._auth.api_key == KEY
    warnings = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert warnings == [f"{netrc} holds the W&B API key and is readable by other users (mode 644): "
                        f"run `chmod 600 {netrc}`"]
    private = tmp_path / "private-netrc"
    private.write_text(netrc.read_text())
    os.chmod(private, 0o600)
    caplog.clear()
    with Api(base_url="http://127.0.0.1:9", environ={}, netrc_path=private):
        pass
    assert not [r for r in caplog.records if "readable" in r.getMessage()]
