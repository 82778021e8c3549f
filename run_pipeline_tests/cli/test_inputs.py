"""Every bad input gets one line naming the bad value and what would be accepted, a documented
exit code, no traceback, and no work done (nothing is written, no server is asked)."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from run_pipeline.emulator.sample import generate

from .helpers import emulator_env, error_line, run_cli

E = "run-pipeline: error: "
STATES = "(one of finished, running, crashed, failed, killed, preempted, pending)"

BAD_FLAGS = [
    (["export", "--state", "bogus"], f"argument --state: unknown run state 'bogus' {STATES}"),
    (["export", "--state", "Finished"], f"argument --state: unknown run state 'Finished': did you mean finished? {STATES}"),
    (["export", "--state", "finished,crashd"], f"argument --state: unknown run state 'crashd': did you mean crashed? {STATES}"),
    (["export", "--since", "yesterday"],
     "argument --since: 'yesterday' is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)"),
    (["export", "--since", "2026-13-45"],
     "argument --since: '2026-13-45' is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)"),
    (["export", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["export", "--workers", "-3"], "argument --workers: must be at least 1, got -3"),
    (["demo", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["export", "--workers", "two"], "argument --workers: 'two' is not a whole number"),
    (["export", "--timeout", "0"], "argument --timeout: must be more than 0 seconds, got 0"),
    (["export", "--timeout", "nan"], "argument --timeout: must be more than 0 seconds, got nan"),
    (["export", "--retry-budget", "-1"], "argument --retry-budget: must be 0 or more seconds, got -1"),
    (["export", "--project", "a,,b"], "argument --project: 'a,,b' has an empty name (comma-separated names, e.g. a,b)"),
    (["emulator", "--port", "70000"], "argument --port: must be a port from 0 to 65535 (0: any free port), got 70000"),
    (["sample-data", "x", "--runs", "0"], "argument --runs: must be at least 1, got 0"),
    (["sample-data", "x", "--entity", "../up"],
     "argument --entity: '../up' is not an entity name (no slashes, not starting with '.')"),
    (["query", "--format", "xml", "SELECT 1"],
     "argument --format: invalid choice: 'xml' (choose from 'table', 'csv', 'json', 'jsonl', 'parquet')"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_values(args, message, tmp_path):
    r = run_cli(args, cwd=tmp_path)
    assert r.returncode == 2
    assert error_line(r) == f"{E}{message} (see run-pipeline {args[0]} --help)"
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_base_url_needs_a_scheme_and_a_host(tmp_path):
    r = run_cli(["export", "--base-url", "localhost:8765", "--warehouse", str(tmp_path / "wh")],
                env={"WANDB_API_KEY": "a" * 40})
    assert r.returncode == 2
    assert error_line(r) == (f"{E}--base-url 'localhost:8765' is not an http:// or https:// URL with a host: "
                             "did you mean http://localhost:8765?")
    assert not (tmp_path / "wh").exists()  # checked before the warehouse is created
    r = run_cli(["export"], env={"WANDB_BASE_URL": "ftp://host", "WANDB_API_KEY": "a" * 40}, cwd=tmp_path)
    assert r.returncode == 2
    assert error_line(r) == f"{E}WANDB_BASE_URL 'ftp://host' is not an http:// or https:// URL with a host"


def test_a_warehouse_that_is_a_file_or_cannot_be_created(emulator, tmp_path):
    (tmp_path / "afile").write_text("x")
    env = emulator_env(emulator)
    for root, why in ((tmp_path / "afile", "is a file, not a directory"),
                      (tmp_path / "afile" / "sub", f"cannot be created: {tmp_path / 'afile'} is a file")):
        for cmd in (["export", "--entity", "demo"], ["demo"]):
            r = run_cli([*cmd, "--warehouse", str(root)], env=env)
            assert r.returncode == 8
            assert error_line(r) == f"{E}warehouse {root} (--warehouse) {why}"
    r = run_cli(["export", "--entity", "demo"], env={**env, "RUN_PIPELINE_WAREHOUSE": str(tmp_path / "afile")})
    assert error_line(r) == f"{E}warehouse {tmp_path / 'afile'} (RUN_PIPELINE_WAREHOUSE) is a file, not a directory"


def test_the_demo_writes_a_local_warehouse(tmp_path):
    r = run_cli(["demo", "--warehouse", "s3://bucket/wh"], cwd=tmp_path)
    assert r.returncode == 2
    assert error_line(r) == (f"{E}the demo writes a local warehouse, not s3://bucket/wh (--warehouse): pass a "
                             "directory to --warehouse")


class NotFoundPages(http.server.BaseHTTPRequestHandler):
    """A web server with no /graphql: every POST is an HTML 404 page."""

    def do_POST(self):  # noqa: N802 - http.server's hook
        body = b"<!DOCTYPE html><html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("handler,status", [(http.server.SimpleHTTPRequestHandler, 501), (NotFoundPages, 404)],
                         ids=["501", "404"])
def test_a_server_that_is_not_wandb(tmp_path, handler, status):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        r = run_cli(["export", "--entity", "demo", "--warehouse", str(tmp_path / "wh")],
                    env={"WANDB_BASE_URL": url, "WANDB_API_KEY": "a" * 40})
    finally:
        server.shutdown()
    assert r.returncode == 5
    assert error_line(r) == f"{E}the server at {url} does not look like a W&B server (HTTP {status})"


def test_empty_or_comment_only_sql(tmp_path):
    (tmp_path / "c.sql").write_text("-- nothing here\n/* nor here */\n;\n")
    for args, source in ((["  "], "the SQL text"), (["-- just a comment"], "the SQL text"),
                         (["--file", str(tmp_path / "c.sql")], f"--file {tmp_path / 'c.sql'}")):
        r = run_cli(["query", "--warehouse", str(tmp_path), *args])
        assert r.returncode == 2
        assert error_line(r) == f"{E}no SQL to run: {source} is empty or only comments"


def test_the_emulator_refuses_a_dataset_that_is_a_file_or_missing_and_warns_when_empty(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli(["emulator", "--port", "0", "--dataset", str(tmp_path / "afile")])
    assert r.returncode == 2 and error_line(r) == f"{E}--dataset {tmp_path / 'afile'} is a file, not a dataset directory"
    missing = tmp_path / "missing"
    r = run_cli(["emulator", "--port", "0", "--dataset", str(missing)])
    assert r.returncode == 2 and error_line(r) == (
        f"{E}--dataset {missing} does not exist: write one with `run-pipeline sample-data {missing}`, "
        f"or `mkdir {missing}` to start an empty server")
    assert not missing.exists()


def test_the_emulator_warns_on_an_empty_dataset(tmp_path):
    import signal
    import subprocess

    from .helpers import CLI, clean_env

    (tmp_path / "empty").mkdir()
    proc = subprocess.Popen(CLI + ["emulator", "--port", "0", "--dataset", str(tmp_path / "empty")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err.splitlines()[0] == f"run-pipeline: warning: --dataset {tmp_path / 'empty'} holds no runs: the server starts empty"


def test_the_emulator_port_in_use(tmp_path):
    generate(tmp_path / "ds", projects=1, runs=1, steps=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli(["emulator", "--port", str(port), "--dataset", str(tmp_path / "ds")])
    assert r.returncode == 2
    assert error_line(r) == f"{E}port {port} on 127.0.0.1 is in use: pick another with --port (--port 0 takes a free one)"


def test_sample_data_into_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli(["sample-data", str(tmp_path / "afile")])
    assert r.returncode == 2 and error_line(r) == f"{E}DIR {tmp_path / 'afile'} is a file, not a directory"
    assert (tmp_path / "afile").read_text() == "x"


def test_query_output_into_a_missing_directory(tmp_path):
    assert run_cli(["demo", "--warehouse", str(tmp_path), "--quiet"]).returncode == 0
    target = tmp_path / "no" / "such" / "file.csv"
    for fmt in ("csv", "parquet"):
        r = run_cli(["query", "--warehouse", str(tmp_path), "--output", str(target), "--format", fmt, "SELECT 1"])
        assert r.returncode == 2
        assert error_line(r) == f"{E}--output {target}: No such file or directory"
