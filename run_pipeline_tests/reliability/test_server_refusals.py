"""The server refuses the project lookup or the runs listing (GraphQL `errors` with HTTP 200,
or HTTP 400): the CLI says so in one line with exit code 9, no traceback."""

from __future__ import annotations

import json

import pytest

from .helpers import ENTITY, run_cli
from .proxy import rewriting_proxy

ERRORS = json.dumps({"errors": [{"message": "internal resolver failure", "path": ["project"]}],
                     "data": None}).encode()
BAD_REQUEST = json.dumps({"errors": [{"message": "Cannot query field \"runs\" on type \"Project\""}]}).encode()


@pytest.mark.parametrize("operation, status, body, shown", [
    ("Project", 200, ERRORS, "GraphQL errors in Project: internal resolver failure"),
    ("Runs", 200, ERRORS, "GraphQL errors in Runs: internal resolver failure"),
    ("Project", 400, BAD_REQUEST, "HTTP 400: Cannot query field \"runs\" on type \"Project\""),
    ("Runs", 400, BAD_REQUEST, "HTTP 400: Cannot query field \"runs\" on type \"Project\""),
], ids=["project-errors", "runs-errors", "project-400", "runs-400"])
def test_a_refused_listing_is_one_line_with_exit_9(emulator, tmp_path, operation, status, body, shown):
    def hook(name: str, upstream_status: int, upstream_body: bytes):
        return (status, body) if name == operation else (upstream_status, upstream_body)

    with rewriting_proxy(emulator.base_url, hook) as proxy:
        done = run_cli(["export", "--entity", ENTITY, "--project", "rl-agents", "--warehouse", str(tmp_path / "wh"),
                        "--quiet"], env={"WANDB_BASE_URL": proxy, "WANDB_API_KEY": emulator.api_key})
    assert done.returncode == 9, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"run-pipeline: error: the W&B server at {proxy} refused ")
    assert "rl-agents" in lines[0] and shown in lines[0]
