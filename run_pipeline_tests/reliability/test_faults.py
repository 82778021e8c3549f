"""Faults from the server: under seeded 429s (with Retry-After, and RateLimit headers from a rate
limit), 500/502/503s, connection resets, truncated bodies and slow responses, an export through
the client API, the CLI and a Dagster materialization lands exactly what a fault-free export
lands (a content digest of every table). A server that keeps failing gives a clear error that
names the run, within the retry budget, instead of a hang.

Seeds: 0-9 through `Exporter` (the whole sample dataset, 36 runs in 3 projects, 4 runs at once,
history from exported Parquet on even seeds and live GraphQL pages on odd ones), 10-11 through
`run-pipeline export` (project rl-agents, 12 runs, the client's default retry policy; seed 10
in a pool of two worker processes), 12-13
through Dagster (project llm-finetune, 6 partitions each, the resource's default retry policy).
"""

from __future__ import annotations

import json
import re
import time

import dagster as dg
import duckdb
import pytest

from run_pipeline.client import Api, RetryPolicy, WandbGaveUpError
from run_pipeline.defs.assets import wandb_catalog, wandb_run_tables
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.emulator.faults import FAULT_KINDS
from run_pipeline.export import Exporter
from run_pipeline.warehouse import TABLES, RunKey, Warehouse

from .digest import explain_difference, warehouse_digest
from .helpers import ENTITY, PROJECTS, control, dataset_history_rows, dataset_run_ids, export_with_api, run_cli

# 5% for each of 500, 502 and 503 (15% server errors: the harsher reading of "5% 500/502/503").
RATES = {"429": 0.10, "500": 0.05, "502": 0.05, "503": 0.05, "reset": 0.03, "truncate": 0.03, "slow": 0.05}
FAULTS = {"rates": RATES, "slow_seconds": 0.2, "retry_after": 0.2}
# Requests per second: every GraphQL response carries RateLimit-Remaining / RateLimit-Reset,
# which the client paces by; a burst past it answers 429 with Retry-After.
RATE_LIMIT = 150
# Fast backoff keeps ten seeds quick; the retry logic is the same as with the default policy.
FAST_RETRY = RetryPolicy(budget=60.0, backoff_base=0.05, backoff_cap=2.0)

API_SEEDS = range(10)
CLI_SEEDS = (10, 11)
DAGSTER_SEEDS = (12, 13)
CLI_PROJECT = "rl-agents"
DAGSTER_PROJECT = "llm-finetune"


@pytest.fixture(scope="module")
def _baselines() -> dict:
    return {}


@pytest.fixture
def baseline(emulator, _baselines, tmp_path_factory):
    """`baseline(projects, run_ids=None)` → (root, digest) of a fault-free export of those
    projects (those runs), made once per module from the pristine dataset (call it before
    injecting faults)."""

    def get(projects: tuple[str, ...], run_ids: tuple[str, ...] | None = None):
        if (projects, run_ids) not in _baselines:
            assert not emulator.app.faults.config.rates, "baseline must be taken before faults are set"
            root = tmp_path_factory.mktemp("baseline")
            export_with_api(emulator.base_url, emulator.api_key, root, projects, run_ids=run_ids, retry=FAST_RETRY)
            digest = warehouse_digest(root)
            # The reference itself must hold the dataset, or every comparison is vacuous.
            runs = run_ids or [r for p in projects for r in dataset_run_ids(emulator.dataset_dir, p)]
            assert digest["runs"].rows == len(runs)
            assert digest["history"].rows == dataset_history_rows(emulator.dataset_dir, projects, run_ids) > 0
            assert all(digest[t].rows > 0 for t in TABLES)
            _baselines[projects, run_ids] = root, digest
        return _baselines[projects, run_ids]

    return get


def inject(emulator, seed: int) -> None:
    emulator.set_rate_limit(RATE_LIMIT)
    emulator.set_faults(seed=seed, **FAULTS)


def assert_faults_bit(injected: dict[str, int], requests_faulted_at_least: int = 10) -> None:
    """The export really went through faults (a fault-free pass would prove nothing). Which
    kinds fire in a one-project export depends on the seed; the whole-dataset seeds see all."""
    assert sum(injected.values()) >= requests_faulted_at_least, injected
    assert len(set(injected) - {"slow"}) >= 4, injected


def assert_same_content(root, baseline_root, expected: dict, context: str) -> None:
    got = warehouse_digest(root)
    if got != expected:
        pytest.fail(f"{context}: warehouse differs from the fault-free export\n"
                    f"{explain_difference(baseline_root, root)}")


# -- the same content under faults ------------------------------------------------------------------

@pytest.mark.parametrize("seed", API_SEEDS)
def test_exporter_under_faults_lands_what_a_fault_free_export_lands(emulator, baseline, tmp_path, seed):
    base_root, expected = baseline(PROJECTS)
    mode = "auto" if seed % 2 == 0 else "live"  # history from exported Parquet, or paged GraphQL
    emulator.set_parquet_mode(mode)
    inject(emulator, seed)
    found = export_with_api(emulator.base_url, emulator.api_key, tmp_path / "wh", PROJECTS, retry=FAST_RETRY)
    injected = dict(emulator.app.faults.injected)
    emulator.clear_faults()
    assert found == sorted(f"{ENTITY}/{p}/{r}" for p in PROJECTS for r in dataset_run_ids(emulator.dataset_dir, p))
    # Each seed's sequence of draws is fixed, and over the whole dataset every kind fires. From
    # exported Parquet a run costs two requests (the plan, which carries the system metrics,
    # and the download): seed 0 faults 21 of them.
    assert_faults_bit(injected, requests_faulted_at_least=20)
    assert set(injected) == set(FAULT_KINDS), injected
    assert_same_content(tmp_path / "wh", base_root, expected, f"seed {seed}, parquet mode {mode}, faults {injected}")


# The CLI and Dagster run with the default policy (backoff from 1 s): slower, so marked slow.
@pytest.mark.slow
@pytest.mark.parametrize("seed", CLI_SEEDS)
def test_cli_export_under_faults_lands_what_a_fault_free_export_lands(emulator, baseline, tmp_path, seed):
    base_root, expected = baseline((CLI_PROJECT,))
    # Faults set through the operator's control endpoint, as for a server in another process.
    control(emulator.base_url, emulator.api_key, "rate-limit", {"requests_per_second": RATE_LIMIT})
    control(emulator.base_url, emulator.api_key, "faults", {"seed": seed, **FAULTS})
    wh = tmp_path / "wh"
    # Seed 10 with two workers: 12 runs go to a pool of two processes; seed 11: four threads.
    workers = ["--workers", "2"] if seed == CLI_SEEDS[0] else []
    r = run_cli(["export", "--entity", ENTITY, "--project", CLI_PROJECT, "--warehouse", str(wh), *workers],
                env={"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key}, timeout=170)
    injected = control(emulator.base_url, emulator.api_key, "stats", {})["faults"]
    emulator.clear_faults()
    assert r.returncode == 0, r.stderr[-3000:]
    n = len(dataset_run_ids(emulator.dataset_dir, CLI_PROJECT))
    assert f"exported {n} of {n} runs" in r.stderr
    assert_faults_bit(injected)
    assert_same_content(wh, base_root, expected, f"CLI seed {seed}, faults {injected}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", DAGSTER_SEEDS)
def test_dagster_materialization_under_faults_lands_what_a_fault_free_export_lands(emulator, baseline, tmp_path, seed):
    # One partition at a time with the resource's default (1 s) backoff: half the project per
    # seed keeps this under a minute; the two seeds cover all of it.
    all_ids = dataset_run_ids(emulator.dataset_dir, DAGSTER_PROJECT)
    half = len(all_ids) // 2
    run_ids = tuple(all_ids[:half] if seed == DAGSTER_SEEDS[0] else all_ids[half:])
    base_root, expected = baseline((DAGSTER_PROJECT,), run_ids)
    wh = tmp_path / "wh"
    resources = {
        "wandb": WandbResource(base_url=emulator.base_url, api_key=emulator.api_key, entity=ENTITY,
                               projects=[DAGSTER_PROJECT]),
        "warehouse": WarehouseResource(root=str(wh)),
    }
    instance = dg.DagsterInstance.ephemeral()
    keys = [encode_partition_key(RunKey(ENTITY, DAGSTER_PROJECT, rid)) for rid in run_ids]
    instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
    inject(emulator, seed)
    for key in keys:
        result = dg.materialize([wandb_run_tables], partition_key=key, resources=resources, instance=instance)
        assert result.success, key
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert {"history_reconciled", "system_metrics_reconciled"} <= set(checks), checks
        assert all(checks.values()), (key, checks)
    assert dg.materialize([wandb_catalog], resources=resources, instance=instance).success
    injected = dict(emulator.app.faults.injected)
    emulator.clear_faults()
    assert_faults_bit(injected)
    assert_same_content(wh, base_root, expected, f"Dagster seed {seed}, faults {injected}")


# -- a server that keeps failing ----------------------------------------------------------------------

def finished_run_with_history(emulator, project: str) -> str:
    for run_id in dataset_run_ids(emulator.dataset_dir, project):
        run_dir = emulator.dataset_dir / ENTITY / project / run_id
        finished = json.loads((run_dir / "run.json").read_text())["state"] == "finished"
        if finished and (run_dir / "history.jsonl").exists():
            return run_id
    raise AssertionError(f"no finished run with history in {project}")


@pytest.mark.parametrize("paths", [None, ["/storage/"]], ids=["every-request", "history-downloads"])
def test_exporter_gives_up_within_budget_naming_the_run(emulator, tmp_path, paths):
    """503 on every request (the run's first query fails), or on the signed history downloads only
    (the run's metadata loads, its history cannot): the export fails in about the budget, with
    the run's path and the cause in the message, and the run does not appear in `runs`."""
    run_id = finished_run_with_history(emulator, CLI_PROJECT)
    path = f"{ENTITY}/{CLI_PROJECT}/{run_id}"
    emulator.set_parquet_mode("parquet")
    emulator.set_faults(seed=0, rates={"503": 1.0}, paths=paths)
    budget = 3.0
    retry = RetryPolicy(budget=budget, backoff_base=0.2)
    warehouse = Warehouse(tmp_path / "wh")
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}, timeout=(2.0, 5.0), retry=retry) as api:
        started = time.monotonic()
        with pytest.raises(WandbGaveUpError) as info:
            Exporter(api, warehouse).export_run(RunKey(ENTITY, CLI_PROJECT, run_id))
        elapsed = time.monotonic() - started
    assert elapsed < budget + 2.0, f"took {elapsed:.1f}s with a {budget:g}s budget"
    message = str(info.value)
    assert path in message and "503" in message and "gave up" in message, message
    assert info.value.status == 503 and info.value.attempts >= 2
    warehouse.refresh_catalog()
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == 0


def test_cli_unreachable_server_exits_5_within_budget(emulator, tmp_path):
    control(emulator.base_url, emulator.api_key, "faults", {"seed": 0, "rates": {"503": 1.0}})
    started = time.monotonic()
    r = run_cli(["export", "--entity", ENTITY, "--project", CLI_PROJECT, "--warehouse", str(tmp_path / "wh"),
                 "--retry-budget", "3", "--timeout", "5"],
                env={"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key}, timeout=60)
    elapsed = time.monotonic() - started
    emulator.clear_faults()
    assert r.returncode == 5, r.stderr
    assert "W&B server unreachable" in r.stderr and "HTTP 503" in r.stderr and emulator.base_url in r.stderr
    assert f"{ENTITY}/{CLI_PROJECT}" in r.stderr, r.stderr  # what it was doing when it gave up
    assert elapsed < 3 + 15, f"took {elapsed:.1f}s with a 3s budget"  # 15s: interpreter and imports


def test_cli_failing_history_downloads_exit_6_naming_each_run(emulator, tmp_path):
    """The server lists runs but every signed history download answers 503: each run with
    history fails by name with the cause, the rest land, and exit code 6 says "partial"."""
    control(emulator.base_url, emulator.api_key, "parquet-mode", {"mode": "parquet"})
    control(emulator.base_url, emulator.api_key, "faults", {"seed": 0, "rates": {"503": 1.0}, "paths": ["/storage/"]})
    wh = tmp_path / "wh"
    started = time.monotonic()
    r = run_cli(["export", "--entity", ENTITY, "--project", CLI_PROJECT, "--warehouse", str(wh),
                 "--retry-budget", "2", "--quiet"],
                env={"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key}, timeout=120)
    elapsed = time.monotonic() - started
    emulator.clear_faults()
    run_ids = dataset_run_ids(emulator.dataset_dir, CLI_PROJECT)
    assert r.returncode == 6, r.stderr
    # One line per failed run: its path, the error class and the server's answer.
    failed = set(re.findall(rf"^  {ENTITY}/{CLI_PROJECT}/(\w+): WandbGaveUpError: .*HTTP 503", r.stderr, re.M))
    assert len(failed) >= len(run_ids) // 2, r.stderr  # every run whose history the server serves as Parquet
    assert f"{len(failed)} of {len(run_ids)} runs failed" in r.stderr
    # 12 runs, 4 at once, each failing within the 2 s budget (plus interpreter start-up).
    assert elapsed < 3 * 2 + 20, f"took {elapsed:.1f}s"
    # Every run either landed whole or is named above: none is missing silently.
    con = duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True)
    landed = {rid for (rid,) in con.execute("SELECT run_id FROM runs").fetchall()}
    con.close()
    assert landed == set(run_ids) - failed
