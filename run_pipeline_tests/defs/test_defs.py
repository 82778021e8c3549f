"""Dagster in-process: the run assets land runs in Parquet, the catalog asset makes them
queryable, the sensor requests exactly the runs that finished, the schedule the ones updated."""

import json
from datetime import datetime, timezone

import dagster as dg
import duckdb
import pytest

from run_pipeline.defs.assets import wandb_catalog, wandb_run_tables
from run_pipeline.defs.batching import requested_partitions
from run_pipeline.defs.partitions import decode_partition_key, encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.defs.schedules import build_nightly_schedule
from run_pipeline.defs.sensors import wandb_finished_runs_sensor
from run_pipeline.settings import NIGHTLY_CRON, TERMINAL_STATES
from run_pipeline.warehouse import RunKey, Warehouse

from ..warehouse.helpers import same_rows

PROJECT = "image-classification"


def disk_runs(emulator, project=PROJECT):
    root = emulator.dataset_dir / "demo" / project
    return {p.name: json.loads((p / "run.json").read_text()) for p in sorted(root.iterdir()) if p.is_dir()}


def disk_rows(emulator, run_id, project=PROJECT):
    path = emulator.dataset_dir / "demo" / project / run_id / "history.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


@pytest.fixture
def resources(emulator, tmp_path):
    return {
        "wandb": WandbResource(base_url=emulator.base_url, api_key=emulator.api_key, entity="demo", projects=[PROJECT]),
        "warehouse": WarehouseResource(root=str(tmp_path / "wh")),
    }


def materialize(keys, resources, instance):
    instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
    results = []
    for key in keys:
        results.append(dg.materialize([wandb_run_tables], partition_key=key, resources=resources, instance=instance))
    return results


def test_materialize_partitions_then_catalog(emulator, resources, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    runs = disk_runs(emulator)
    keys = [encode_partition_key(RunKey("demo", PROJECT, rid)) for rid in list(runs)[:4]]
    results = materialize(keys, resources, instance)
    assert all(r.success for r in results)
    checks = [e for r in results for e in r.get_asset_check_evaluations()]
    assert len(checks) == 16 and all(c.passed for c in checks)
    cat = dg.materialize([wandb_catalog], resources=resources, instance=instance)
    assert cat.success
    con = duckdb.connect(str(tmp_path / "wh" / "warehouse.duckdb"), read_only=True)
    got = dict(con.sql("select run_id, count(*) from history group by 1").fetchall())
    assert got == {rid: disk_rows(emulator, rid) for rid in list(runs)[:4] if disk_rows(emulator, rid)}
    states = dict(con.sql("select run_id, state from runs").fetchall())
    assert states == {rid: runs[rid]["state"] for rid in list(runs)[:4]}
    # Re-materializing a partition replaces it: no duplicated rows.
    materialize(keys[:1], resources, instance)
    again = dict(con.sql("select run_id, count(*) from history group by 1").fetchall())
    assert again == got


def test_the_catalog_asset_packs_finished_runs_and_the_metrics_view_keeps_its_rows(emulator, resources, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    runs = disk_runs(emulator)
    materialize([encode_partition_key(RunKey("demo", PROJECT, rid)) for rid in runs], resources, instance)
    wh = Warehouse(tmp_path / "wh")
    wh.refresh_catalog()
    query = "SELECT run_id, step, key, value FROM metrics ORDER BY ALL"
    with wh.connect() as con:
        before = con.execute(query).fetchall()
    packable = {r[0] for r in before if runs[r[0]]["state"] in TERMINAL_STATES}
    assert len(packable) >= 8

    cat = dg.materialize([wandb_catalog], resources=resources, instance=instance)
    assert cat.success
    [event] = cat.asset_materializations_for_node("wandb_catalog")
    assert (event.metadata["packed_runs"].value, event.metadata["packs_written"].value) == (len(packable), 1)
    with wh.connect() as con:
        assert same_rows(con.execute(query).fetchall(), before)
    assert {p.parent.name.split("=", 1)[1] for p in (tmp_path / "wh" / "metrics").rglob("*.parquet")} == \
        {r[0] for r in before} - packable
    again = dg.materialize([wandb_catalog], resources=resources, instance=instance)
    [event] = again.asset_materializations_for_node("wandb_catalog")
    assert event.metadata["packed_runs"].value == 0


def test_a_failing_compaction_still_refreshes_the_catalog_and_says_why(emulator, resources, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    runs = disk_runs(emulator)
    materialize([encode_partition_key(RunKey("demo", PROJECT, rid)) for rid in runs], resources, instance)
    # Where compaction writes its pack is not a directory (a full or read-only disk, say).
    (tmp_path / "wh" / "_staging" / "packs").write_text("in the way")
    cat = dg.materialize([wandb_catalog], resources=resources, instance=instance)
    assert cat.success
    [event] = cat.asset_materializations_for_node("wandb_catalog")
    assert event.metadata["compaction_error"].value.startswith(
        f"demo/{PROJECT}: compaction stopped, nothing was lost: ")
    assert event.metadata["packed_runs"].value == 0
    assert (tmp_path / "wh" / "metrics_packs").exists() is False
    with duckdb.connect(str(tmp_path / "wh" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT run_id) FROM history").fetchone()[0] == \
            sum(1 for r in runs if disk_rows(emulator, r))


def test_incremental_export_after_run_grows(emulator, resources, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    run_id, meta = next((rid, m) for rid, m in disk_runs(emulator).items() if m["state"] == "running")
    key = encode_partition_key(RunKey("demo", PROJECT, run_id))
    materialize([key], resources, instance)
    before = disk_rows(emulator, run_id)
    last = emulator.store.get_run("demo", PROJECT, run_id).history.last_step
    emulator.store.append_history("demo", PROJECT, run_id, [{"_step": last + i, "train/loss": 0.5 / i} for i in range(1, 6)])
    result = materialize([key], resources, instance)[0]
    mat = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("wandb_run_history")][0]
    md = mat.materialization.metadata
    assert md["rows_written"].value == 5 and md["rows_total"].value == before + 5


def test_missing_run_is_recorded_as_deleted_with_its_name(emulator, resources):
    # W&B deletes softly: a partition whose run the server no longer has is not a failure.
    instance = dg.DagsterInstance.ephemeral()
    key = encode_partition_key(RunKey("demo", PROJECT, "gone1234"))
    instance.add_dynamic_partitions(wandb_runs_partitions.name, [key])
    result = dg.materialize([wandb_run_tables], partition_key=key, resources=resources, instance=instance,
                            raise_on_error=False)
    assert result.success
    runs_md = [m for m in result.asset_materializations_for_node("wandb_run_tables")
               if m.asset_key == dg.AssetKey("wandb_runs")][0].metadata
    assert runs_md["deleted_on_server"].value == ["demo/image-classification/gone1234"]


def test_sensor_requests_finished_runs_once(emulator, resources):
    instance = dg.DagsterInstance.ephemeral()
    finished = {rid for rid, m in disk_runs(emulator).items() if m["state"] in ("finished", "crashed", "failed", "killed")}
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    result = wandb_finished_runs_sensor(ctx)
    added = result.dynamic_partitions_requests[0].partition_keys
    requested = [k for r in result.run_requests for k in requested_partitions(r, list(added))]
    assert {decode_partition_key(k).run_id for k in requested} == finished
    assert sorted(added) == sorted(requested)
    instance.add_dynamic_partitions(wandb_runs_partitions.name, list(added))
    # A run that finishes later is picked up on the next tick; the others are not requested again
    # with a new run key.
    running = next(rid for rid, m in disk_runs(emulator).items() if m["state"] == "running")
    emulator.store.set_state("demo", PROJECT, running, "finished")
    ctx2 = dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor)
    result2 = wandb_finished_runs_sensor(ctx2)
    new_keys = {r.run_key for r in result2.run_requests} - {r.run_key for r in result.run_requests}
    assert [decode_partition_key(k.split("@")[0]).run_id for k in new_keys] == [running]
    assert result2.dynamic_partitions_requests[0].partition_keys == [
        encode_partition_key(RunKey("demo", PROJECT, running))]


def test_schedule_requests_runs_changed_since_their_export(emulator, resources):
    schedule = build_nightly_schedule(NIGHTLY_CRON, "UTC")
    runs = disk_runs(emulator)
    with dg.instance_for_test() as instance:  # schedules need an instance with a ref

        def tick():
            # Closed after the tick: the context opens its own instance from the ref, which would
            # otherwise stay Dagster's current one after this temp instance is gone and break
            # Definitions resolved by later tests ("unable to open database file").
            with dg.build_schedule_context(instance=instance, resources=resources,
                                           scheduled_execution_time=datetime.now(timezone.utc)) as ctx:
                result = schedule(ctx)
                return result if isinstance(result, dg.SkipReason) else list(result)

        first = tick()
        assert {decode_partition_key(r.partition_key).run_id for r in first} == set(runs)
        assert set(instance.get_dynamic_partitions(wandb_runs_partitions.name)) == {r.partition_key for r in first}
        for r in first:
            dg.materialize([wandb_run_tables], partition_key=r.partition_key, resources=resources, instance=instance)
        assert isinstance(tick(), dg.SkipReason)
        run_id = next(iter(runs))
        emulator.store.append_history("demo", PROJECT, run_id, [{"_step": 10**6, "late": 1.0}])
        again = tick()
        assert [decode_partition_key(r.partition_key).run_id for r in again] == [run_id]


def test_partition_keys_round_trip_hostile_names():
    for parts in [("demo", "p", "abc"), ("e/x", "p,q|r", "[a]..."), ("ünï", "100%", "a b")]:
        ref = RunKey(*parts)
        key = encode_partition_key(ref)
        assert key.count("/") == 2 and not set(key) & set("|,[]") and "..." not in key
        assert decode_partition_key(key) == ref


def test_partition_keys_are_spelled_as_existing_instances_hold_them():
    """Dagster instances keep the keys they were given: the encoding never changes."""
    spelled = {("demo", "proj", "abc123"): "demo/proj/abc123",
               ("a/b", "p|q,r", "[x]...y%z"): "a%2Fb/p%7Cq%2Cr/%5Bx%5D%2E%2E%2Ey%25z",
               ("ünï", "sp ace", "tab\there"): "ünï/sp ace/tab%09here",
               ("e", "..", "...."): "e/../%2E%2E%2E."}
    for parts, key in spelled.items():
        assert encode_partition_key(RunKey(*parts)) == key
        assert decode_partition_key(key) == RunKey(*parts)


def test_grouped_partitions_report_batch_totals_and_per_run_rows(emulator, resources):
    """A backfill run covering several partitions exports each and labels figures as batch totals."""
    instance = dg.DagsterInstance.ephemeral()
    runs = list(disk_runs(emulator))[:3]
    keys = [encode_partition_key(RunKey("demo", PROJECT, rid)) for rid in runs]
    instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
    job = dg.Definitions(assets=[wandb_run_tables], resources=resources).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("wandb_run_history")]
    assert sorted(m.partition for m in mats) == sorted(keys)
    md = mats[0].materialization.metadata
    assert md["batch_rows_total"].value == sum(disk_rows(emulator, rid) for rid in runs)
    assert all(f"demo/{PROJECT}/{rid}" in md["per_run"].value for rid in runs)


def test_a_backfill_batch_of_partitions_is_exported_by_a_pool_of_processes(emulator, resources, tmp_path):
    # A backfill groups partitions into one Dagster run (BackfillPolicy.multi_run); with at
    # least 4 runs per worker they are exported by worker processes, and every one lands.
    project = "rl-agents"
    rids = list(disk_runs(emulator, project))
    assert len(rids) >= 8
    keys = [encode_partition_key(RunKey("demo", project, rid)) for rid in rids]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
    result = dg.materialize([wandb_run_tables], resources=resources, instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    history = result.asset_materializations_for_node("wandb_run_tables")
    by_asset = {m.asset_key.to_user_string(): m.metadata for m in history}
    assert by_asset["wandb_runs"]["batch_runs"].value == len(rids)
    assert by_asset["wandb_run_history"]["batch_rows_total"].value == sum(disk_rows(emulator, r, project) for r in rids)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert dg.materialize([wandb_catalog], resources=resources, instance=instance).success
    con = duckdb.connect(str(tmp_path / "wh" / "warehouse.duckdb"), read_only=True)
    assert con.execute("select count(*) from runs").fetchone()[0] == len(rids)
