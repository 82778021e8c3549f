"""Runs of every shape a real project holds go through the Dagster assets, checks and metadata:
no history, no system metrics, only system metrics, history starting at step 61,010, repeated
and out-of-order steps, keys of mixed types, media objects, 10,000-key rows, hostile names. A
run that cannot be stored fails alone, named, and the rest of its batch lands; a run the server
no longer has is recorded as deleted, not failed."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from run_pipeline.defs.assets import wandb_run_tables
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.emulator.hostile import ENTITY, SQL_ENTITY, TOO_LONG_RUN_ID, generate_hostile
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.warehouse import RunKey, Warehouse

from ..conftest import TEST_API_KEY
from ..reliability import reconcile as rc

SHAPES = "shapes"


def _run_dir(root: Path, run_id: str, state: str, history: list[dict], events: list[dict]) -> None:
    d = root / ENTITY / SHAPES / run_id
    d.mkdir(parents=True)
    meta = {"state": state, "created_at": "2026-11-01T00:00:00Z", "heartbeat_at": "2026-11-01T00:05:00Z",
            "config": {"lr": 0.1}, "summary": {}}
    (d / "run.json").write_text(json.dumps(meta))
    if history:
        (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if events:
        (d / "system.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "dataset"
    corpus = generate_hostile(root, wide_keys=2_000, big_config_bytes=200_000)
    events = [{"_timestamp": 1.7e9 + i, "_runtime": float(i), "system.cpu": 10.0 + i} for i in range(5)]
    _run_dir(root, "sysonly1", "crashed", [], events)  # crashed before logging a step
    _run_dir(root, "crashed0", "crashed", [], [])       # crashed before logging anything
    _run_dir(root, "full0001", "finished", [{"_step": i, "loss": 1.0 / (i + 1)} for i in range(20)], events)
    return corpus


@pytest.fixture(scope="module")
def server(corpus):
    with EmulatorServer(corpus.root, api_key=TEST_API_KEY) as s:
        yield s


def resources(server, root: Path) -> dict:
    return {"wandb": WandbResource(base_url=server.base_url, api_key=server.api_key, entity=ENTITY),
            "warehouse": WarehouseResource(root=str(root))}


def all_refs(corpus) -> list[RunKey]:
    refs = [RunKey(r.entity, r.project, r.run_id) for r in corpus.runs if r.refused is None]
    return refs + [RunKey(ENTITY, SHAPES, rid) for rid in ("sysonly1", "crashed0", "full0001")]


def source_lines(corpus, ref: RunKey, name: str) -> int:
    path = corpus.root / ref.entity / ref.project / ref.run_id / name
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.exists() else 0


def test_every_shape_materializes_with_checks_and_metadata(corpus, server, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    refs = all_refs(corpus)
    instance.add_dynamic_partitions(wandb_runs_partitions.name, [encode_partition_key(r) for r in refs])
    res = {**resources(server, tmp_path / "wh"),
           "wandb": WandbResource(base_url=server.base_url, api_key=server.api_key)}
    repeated = {(ENTITY, "keys", "steps001")}
    for ref in refs:
        result = dg.materialize([wandb_run_tables], partition_key=encode_partition_key(ref), resources=res,
                                instance=instance, raise_on_error=False)
        assert result.success, ref
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["history_reconciled"] and checks["system_metrics_reconciled"], ref
        assert checks["config_and_summary_present"], ref
        assert checks["steps_unique"] == ((ref.entity, ref.project, ref.run_id) not in repeated), ref
        md = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("wandb_run_tables")}
        assert md["wandb_run_history"]["rows_total"].value == source_lines(corpus, ref, "history.jsonl"), ref
        assert md["wandb_run_system_metrics"]["rows_total"].value == source_lines(corpus, ref, "system.jsonl"), ref
        assert md["wandb_runs"]["runs"].value == 1
    wh = Warehouse(tmp_path / "wh")
    wh.refresh_catalog()
    with wh.connect() as con:
        runs = con.execute("SELECT entity, project, run_id, history_line_count, last_step FROM runs").fetchall()
        sysonly = con.execute("SELECT count(*) FROM system_metrics WHERE run_id = 'sysonly1'").fetchone()[0]
    assert {(e, p, r) for e, p, r, _, _ in runs} == {(r.entity, r.project, r.run_id) for r in refs}
    assert {r: (n, last) for _, p, r, n, last in runs if p == SHAPES} == {
        "sysonly1": (0, -1), "crashed0": (0, -1), "full0001": (20, 19)}
    assert sysonly == 5
    files = rc.parquet_files(tmp_path / "wh", "history")
    for ref in refs:
        path = corpus.root / ref.entity / ref.project / ref.run_id / "history.jsonl"
        if not path.exists():
            assert (ref.entity, ref.project, ref.run_id) not in files
            continue
        rows = rc.read_jsonl(path)
        got, _, _ = rc.warehouse_history(files[(ref.entity, ref.project, ref.run_id)])
        assert got == rc.source_rows(rows, rc.expected_types(rows)), ref


def test_one_unstorable_run_fails_alone_and_the_rest_of_its_batch_lands(corpus, server, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    batch = [RunKey(ENTITY, "keys", "empty001"), RunKey(ENTITY, "long", TOO_LONG_RUN_ID),
             RunKey(ENTITY, "keys", "steps001"), RunKey(ENTITY, SHAPES, "sysonly1")]
    keys = [encode_partition_key(r) for r in batch]
    instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
    res = {**resources(server, tmp_path / "wh"),
           "wandb": WandbResource(base_url=server.base_url, api_key=server.api_key)}
    result = dg.materialize([wandb_run_tables], resources=res, instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    text = failure.event_specific_data.error.to_string()
    assert f"{ENTITY}/long/{TOO_LONG_RUN_ID}" in text and "1 of 4 runs failed" in text
    for asset in ("wandb_runs", "wandb_run_history", "wandb_run_system_metrics"):
        status = instance.get_status_by_partition(dg.AssetKey(asset), keys, wandb_runs_partitions)
        assert {k: s.value for k, s in status.items()} == {
            keys[0]: "MATERIALIZED", keys[1]: "FAILED", keys[2]: "MATERIALIZED", keys[3]: "MATERIALIZED"}, asset

    def history_metadata(key):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("wandb_run_history"), asset_partitions=[key]), limit=1).records
        return records[0].asset_materialization.metadata

    by_key = {k: history_metadata(k) for k in (keys[0], keys[2])}
    assert by_key[keys[2]]["rows_total"].value == source_lines(corpus, batch[2], "history.jsonl")
    assert by_key[keys[0]]["rows_total"].value == 0
    # Retried alone, the failed run fails again with the same named reason; the others are untouched.
    again = dg.materialize([wandb_run_tables], partition_key=keys[1], resources=res, instance=instance,
                           raise_on_error=False)
    assert not again.success
    assert "too long" in [e for e in again.all_events if e.event_type_value == "STEP_FAILURE"][0] \
        .event_specific_data.error.to_string()


def test_a_run_the_server_no_longer_has_is_recorded_deleted_not_failed(corpus, server, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    gone = RunKey(SQL_ENTITY, "x", "gone1234")
    instance.add_dynamic_partitions(wandb_runs_partitions.name, [encode_partition_key(gone)])
    res = {**resources(server, tmp_path / "wh"),
           "wandb": WandbResource(base_url=server.base_url, api_key=server.api_key)}
    result = dg.materialize([wandb_run_tables], partition_key=encode_partition_key(gone), resources=res,
                            instance=instance, raise_on_error=False)
    assert result.success
    md = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("wandb_run_tables")}
    assert md["wandb_runs"]["deleted_on_server"].value == [gone.path]
    assert md["wandb_runs"]["runs"].value == 0
