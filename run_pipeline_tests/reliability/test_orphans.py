"""Killing `run-pipeline export` mid-export, by SIGKILL or SIGTERM, leaves none of its worker
pool behind: not the workers, the fork server nor the resource tracker."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from .helpers import ENTITY, PROJECTS, cli_command

SETTLE_SECONDS = 10


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_a_killed_export_leaves_no_worker_process(emulator, tmp_path, sig):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_"))}
    env.update(HOME="/nonexistent", WANDB_BASE_URL=emulator.base_url, WANDB_API_KEY=emulator.api_key)
    projects = [arg for p in PROJECTS for arg in ("--project", p)]  # 36 runs: a pool of 4 processes
    cli = subprocess.Popen(cli_command() + ["export", "--entity", ENTITY, *projects, "--warehouse",
                                            str(tmp_path / "wh"), "--workers", "4", "--full"],
                           env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in cli.stderr:
            if line.startswith("[1/"):  # the pool is up and exporting
                break
        pool = psutil.Process(cli.pid).children(recursive=True)
        cli.send_signal(sig)
        assert cli.wait(timeout=30) == -sig
    finally:
        if cli.poll() is None:
            cli.kill()
    assert len(pool) >= 6, pool  # 4 workers, the fork server, the resource tracker
    deadline = time.monotonic() + SETTLE_SECONDS
    alive = pool
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.2)
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} of the export's processes outlived it: {[p.pid for p in alive]}"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
