"""`run-pipeline emulator` and `run-pipeline sample-data` as a user runs them: a subprocess
that prints its URL once it answers and stops cleanly on a signal, and a generator that
writes the dataset it reports."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from run_pipeline.emulator.sample import generate

KEY = "clikey" + "3" * 34
SCRIPT = Path(sys.executable).with_name("run-pipeline")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "run_pipeline.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def first_line(stream, timeout: float) -> str:
    """The first line of a subprocess pipe, or fail after `timeout` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line on stdout within {timeout} s")


# -- emulator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_emulator_serves_the_dataset_and_stops_on_a_signal(tmp_path, sig):
    dataset = tmp_path / "ds"
    generate(dataset, projects=1, runs=2, steps=30)
    project = next((dataset / "demo").iterdir()).name
    proc = subprocess.Popen(CLI + ["emulator", "--port", "0", "--dataset", str(dataset), "--api-key", KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = first_line(proc.stdout, timeout=30)
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*\n", line), line
        base = line.strip()
        # It answers as soon as the line is out: no retry loop here.
        q = 'query($p: String!) { project(name: $p, entityName: "demo") { runCount } }'
        r = requests.post(f"{base}/graphql", json={"query": q, "variables": {"p": project}}, auth=("api", KEY), timeout=10)
        assert r.status_code == 200 and r.json() == {"data": {"project": {"runCount": 2}}}
        assert requests.post(f"{base}/graphql", json={"query": q}, auth=("api", "x" * 40), timeout=10).status_code == 401
        # Writes land in the dataset directory it was given.
        m = ('mutation { upsertBucket(input: {name: "from-cli", modelName: "%s", entityName: "demo", '
             'state: "finished", tags: ["cli"]}) { inserted } }' % project)
        assert requests.post(f"{base}/graphql", json={"query": m}, auth=("api", KEY), timeout=10).json() == \
            {"data": {"upsertBucket": {"inserted": True}}}

        start = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        stopped_in = time.monotonic() - start
        assert stopped_in < 5, stopped_in
        assert proc.stdout.read() == ""  # exactly one line on stdout
        meta = json.loads((dataset / "demo" / project / "from-cli" / "run.json").read_text())
        assert meta["state"] == "finished" and meta["tags"] == ["cli"]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_emulator_refuses_a_non_numeric_port():
    r = run_cli("emulator", "--port", "eighty")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("run-pipeline: error: argument --port: 'eighty' is not a whole number "
                        "(see run-pipeline emulator --help)\n")


# -- sample-data ----------------------------------------------------------------------------------
def test_sample_data_writes_the_dataset_it_reports(tmp_path):
    out = tmp_path / "sample"
    r = run_cli("sample-data", str(out), "--runs", "2", "--steps", "40")
    assert r.returncode == 0, r.stderr
    run_dirs = sorted(p.parent for p in out.glob("*/*/*/run.json"))
    rows = sum(len((d / "history.jsonl").read_text().splitlines()) for d in run_dirs)
    projects = sorted({d.parent.name for d in run_dirs})
    assert len(run_dirs) == 6 and len(projects) == 3 and {d.parent.parent.name for d in run_dirs} == {"demo"}
    assert r.stdout == f"wrote 6 runs ({rows} history rows) in 3 projects of entity 'demo' to {out}\n"


def test_sample_data_options_and_determinism(tmp_path):
    args = ["--entity", "acme", "--projects", "1", "--runs", "3", "--steps", "25", "--seed", "4"]
    first = run_cli("sample-data", str(tmp_path / "a"), *args)
    second = run_cli("sample-data", str(tmp_path / "b"), *args)
    assert first.returncode == second.returncode == 0
    assert re.fullmatch(r"wrote 3 runs \(\d+ history rows\) in 1 projects of entity 'acme' to .*\n", first.stdout)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len([f for f in files_a if f.name == "run.json"]) == 3
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_sample_data_needs_a_directory():
    r = run_cli("sample-data")
    assert r.returncode == 2 and "the following arguments are required: dir" in r.stderr


# -- help ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    ([], ["emulator", "sample-data"]),
    (["emulator"], ["--dataset", "--host", "--port", "--api-key"]),
    (["sample-data"], ["--entity", "--projects", "--runs", "--steps", "--metrics", "--seed"]),
])
def test_help_exits_zero(args, expected):
    r = run_cli(*args, "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith(f"usage: run-pipeline {' '.join(args)}".rstrip())
    assert all(word in r.stdout for word in expected)


def test_console_script_is_installed():
    assert shutil.which("run-pipeline", path=str(Path(sys.executable).parent)) is not None
