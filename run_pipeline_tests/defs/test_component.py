"""`WandbExportComponent` in a `dg` project: scaffolded, loaded from its defs.yaml, then a
finished-runs sensor tick whose batched requests run for real, a backfill of the rest, and a
warehouse equal to a plain export; and the `dg` CLI (scaffold, check defs, list defs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from run_pipeline.client import Api
from run_pipeline.defs.batching import requested_partitions
from run_pipeline.defs.component import WandbExportComponent, WandbExportScaffolder, WandbScaffoldParams
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.discovery import discover_runs
from run_pipeline.emulator.sample import generate
from run_pipeline.pool import export_runs
from run_pipeline.settings import BACKFILL_PARTITIONS_PER_RUN, TERMINAL_STATES
from run_pipeline.warehouse import Warehouse
from run_pipeline_tests.reliability.digest import warehouse_digest

TABLES = ("wandb_runs", "wandb_run_config", "wandb_run_summary", "wandb_run_history", "wandb_run_system_metrics")
DG = Path(sys.executable).parent / "dg"


def write_project(root: Path, module: str) -> Path:
    """A minimal `dg` project (what `dg scaffold project` writes, less the uv environment)."""
    (root / module / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
        f'[tool.dg]\ndirectory_type = "project"\n\n'
        f'[tool.dg.project]\nroot_module = "{module}"\nregistry_modules = ["run_pipeline"]\n')
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (root / module / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n")
    return root


def load_defs(project: Path, module: str, monkeypatch) -> dg.Definitions:
    monkeypatch.syspath_prepend(str(project))
    return dg.load_from_defs_folder(path_within_project=project / module)


def partitions_materialized(instance, key: dg.AssetKey) -> set[str]:
    return set(instance.get_materialized_partitions(key))


def test_scaffolded_component_exports_ticks_and_backfills(emulator, tmp_path, monkeypatch):
    # Two entities, a glob and a name: one deployment, each project's runs in their own partitions.
    generate(emulator.dataset_dir, entity="lab", projects=1, runs=4, steps=40, seed=3)
    emulator.store.reload()
    monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
    monkeypatch.setenv("WANDB_API_KEY", emulator.api_key)
    module = f"wandb_proj_{uuid.uuid4().hex[:8]}"
    project = write_project(tmp_path / "proj", module)
    target = project / module / "defs" / "wandb_export"
    WandbExportScaffolder().scaffold(dg.ScaffoldRequest(
        type_name="run_pipeline.WandbExportComponent", target_path=target, scaffold_format="yaml",
        project_root=project, params=WandbScaffoldParams(entity="demo", project="image-*")))
    doc = yaml.safe_load((target / "defs.yaml").read_text())
    assert doc["type"] == "run_pipeline.WandbExportComponent"
    assert doc["attributes"]["api_key"] == "{{ env.WANDB_API_KEY }}"
    doc["attributes"].update(entities=["demo", "lab"], projects=["image-*", "rl-agents"], runs_per_dagster_run=4,
                             key_prefix=["ml"], tags={"source": "wandb"})
    doc["post_processing"] = {"assets": [{"target": "*", "attributes": {"owners": ["team:ml-platform"]}}]}
    (target / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    defs = load_defs(project, module, monkeypatch)
    keys = {t: dg.AssetKey(["ml", t]) for t in TABLES}
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {*keys.values(), dg.AssetKey(["ml", "wandb_catalog"])}
    runs_node = graph.get(keys["wandb_runs"])
    assert runs_node.owners == ["team:ml-platform"]  # post_processing reached the generated assets
    assert runs_node.tags["source"] == "wandb"
    assert runs_node.pools == {"wandb"}
    assert runs_node.freshness_policy.deadline_cron == "0 2 * * *"
    columns = {c.name: c.type for c in runs_node.metadata["dagster/column_schema"].columns}
    assert columns["state"] == "VARCHAR" and columns["heartbeat_at"] == "TIMESTAMP"
    # The key reached Dagster as the variable, so the UI shows its name, not its value.
    assert isinstance(defs.resources["wandb"].api_key, dg.EnvVar)
    assert defs.resources["wandb"].api_key == "WANDB_API_KEY"
    assert emulator.api_key not in repr(defs.resources["wandb"])

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("wandb_export_job")
    sensor = defs.resolve_sensor_def("wandb_finished_runs_sensor")
    tick = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs))
    for request in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(wandb_runs_partitions.name, list(request.partition_keys))
    order = list(instance.get_dynamic_partitions(wandb_runs_partitions.name))
    with Api(api_key=emulator.api_key, base_url=emulator.base_url) as api:
        projects = [("demo", "image-classification"), ("demo", "rl-agents"), ("lab", "image-classification")]
        every = [r for e, p in projects for r in discover_runs(api, e, p)]
    finished = {encode_partition_key(r.key) for r in every if r.state in TERMINAL_STATES}
    assert set(order) == finished  # three projects of two entities in one tick
    assert len(tick.run_requests) < len(finished)  # batched
    requested = [k for r in tick.run_requests for k in requested_partitions(r, order)]
    assert sorted(requested) == sorted(finished) and all(len(requested_partitions(r, order)) <= 4
                                                         for r in tick.run_requests)
    for request in tick.run_requests:  # what the daemon launches, run for real
        assert job.execute_in_process(instance=instance, tags=request.tags,
                                      partition_key=request.partition_key).success
    assert partitions_materialized(instance, keys["wandb_run_history"]) == finished

    # The discovery sensor registers the running runs; a backfill of every partition, grouped
    # as the backfill policy groups them, exports the rest.
    discovery = defs.resolve_sensor_def("wandb_runs_discovery_sensor")
    found = discovery(dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs))
    for request in found.dynamic_partitions_requests:
        instance.add_dynamic_partitions(wandb_runs_partitions.name, list(request.partition_keys))
    order = list(instance.get_dynamic_partitions(wandb_runs_partitions.name))
    assert set(order) == {encode_partition_key(r.key) for r in every}
    for i in range(0, len(order), BACKFILL_PARTITIONS_PER_RUN):
        chunk = order[i:i + BACKFILL_PARTITIONS_PER_RUN]
        result = job.execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": chunk[0], "dagster/asset_partition_range_end": chunk[-1]})
        assert result.success
    for key in keys.values():
        assert partitions_materialized(instance, key) == set(order)
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.asset_key in keys.values() and c.passed for c in checks)
    assert defs.resolve_job_def("wandb_catalog_job").execute_in_process(instance=instance).success

    # The full export equals a plain export of the same runs.
    plain = tmp_path / "plain"
    with Api(api_key=emulator.api_key, base_url=emulator.base_url) as api:
        outcomes = list(export_runs(api, Warehouse(str(plain)), every))
    assert all(o.result for o in outcomes)
    Warehouse(str(plain)).refresh_catalog()
    assert warehouse_digest(project / "warehouse") == warehouse_digest(plain)


def test_component_defaults_match_definitions_py():
    """definitions.py and a component with default fields build the same deployment."""
    from run_pipeline.definitions import defs as module_defs

    component_defs = WandbExportComponent().build_defs(dg.ComponentTree.for_test().load_context)
    for defs in (module_defs, component_defs):
        assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == \
            {*TABLES, "wandb_catalog"}
    assert sorted(s.name for s in module_defs.sensors) == sorted(s.name for s in component_defs.sensors)
    assert [s.cron_schedule for s in module_defs.schedules] == [s.cron_schedule for s in component_defs.schedules]


@pytest.mark.skipif(not DG.exists(), reason="the dg CLI (dagster-dg-cli) is not installed")
def test_dg_scaffold_check_and_list_defs(tmp_path):
    module = f"wandb_cli_{uuid.uuid4().hex[:8]}"
    project = write_project(tmp_path / "proj", module)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
           "PATH": f"{DG.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(repo), str(project), os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_BASE_URL", None)

    def dg_cli(*args: str) -> str:
        done = subprocess.run([str(DG), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    # The package's entry point (or the project's registry_modules) makes dg list the component.
    listed_types = {c["key"] for c in json.loads(dg_cli("list", "components", "--json"))["items"]}
    assert "run_pipeline.WandbExportComponent" in listed_types
    dg_cli("scaffold", "defs", "run_pipeline.WandbExportComponent", "wandb_export", "--entity", "demo",
           "--project", "image-classification")
    attributes = yaml.safe_load((project / module / "defs" / "wandb_export" / "defs.yaml").read_text())["attributes"]
    assert attributes["entities"] == ["demo"] and attributes["projects"] == ["image-classification"]
    assert "All definitions loaded successfully" in dg_cli("check", "defs")
    listed = json.loads(dg_cli("list", "defs", "--json"))
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {*TABLES, "wandb_catalog"}
    assert {s["name"] for s in listed["sensors"]} == {"wandb_runs_discovery_sensor", "wandb_finished_runs_sensor",
                                                       "wandb_catalog_automation_sensor"}
    assert [s["cron_schedule"] for s in listed["schedules"]] == ["0 2 * * *"]
    shutil.rmtree(project / "warehouse", ignore_errors=True)
