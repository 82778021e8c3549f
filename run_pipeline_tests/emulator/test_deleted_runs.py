"""Deletion is soft, as on W&B: a deleted run leaves listings and lookups, waits in its project's
trash with its deletion time, and a restore brings it back whole (same id, same history)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from .test_conformance import ENTITY, PROJECT, pick_run

RUN_Q = 'query($r: String!) { project(name: "image-classification", entityName: "demo") { run(name: $r) { id name } } }'


def control(emulator, action: str, body: dict) -> requests.Response:
    return requests.post(f"{emulator.base_url}/_control/{action}", json=body, auth=("api", emulator.api_key), timeout=30)


def lookup(emulator, run_id: str):
    r = requests.post(f"{emulator.base_url}/graphql", json={"query": RUN_Q, "variables": {"r": run_id}},
                      auth=("api", emulator.api_key), timeout=30)
    assert r.status_code == 200 and "errors" not in r.json()
    return r.json()["data"]["project"]["run"]


def listed(emulator) -> set[str]:
    return {r.run_id for r in emulator.store.project_runs(ENTITY, PROJECT)}


def test_delete_and_restore_through_the_control_endpoint(emulator, wandb_api):
    run_id, _, rows = pick_run(emulator.dataset_dir, parquet=True)
    ref = {"entity": ENTITY, "project": PROJECT, "run_id": run_id}
    before = lookup(emulator, run_id)
    assert control(emulator, "delete-run", ref).json() == {"deleted": True}
    assert lookup(emulator, run_id) is None and run_id not in listed(emulator)
    assert run_id not in [r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}")]
    trash = emulator.dataset_dir / ENTITY / PROJECT / ".deleted" / run_id
    deleted_at = datetime.fromisoformat(json.loads((trash / "deleted.json").read_text())["deleted_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - deleted_at) < timedelta(minutes=5)
    assert emulator.store.deleted_runs(ENTITY, PROJECT) == {run_id: deleted_at}
    # A reload (or a restarted emulator) does not take the trash for a run.
    emulator.store.reload()
    assert lookup(emulator, run_id) is None

    assert control(emulator, "restore-run", ref).json() == {"restored": True, "id": before["id"]}
    assert lookup(emulator, run_id) == before and emulator.store.deleted_runs(ENTITY, PROJECT) == {}
    assert not (emulator.dataset_dir / ENTITY / PROJECT / run_id / "deleted.json").exists()
    got = list(wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}").scan_history())
    assert [r["_step"] for r in got] == [r["_step"] for r in rows]


def test_sdk_delete_is_soft_and_restorable(emulator, wandb_api):
    run_id, _, _ = pick_run(emulator.dataset_dir, parquet=False)
    history = (emulator.dataset_dir / ENTITY / PROJECT / run_id / "history.jsonl").read_bytes()
    wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}").delete()
    assert lookup(emulator, run_id) is None
    assert (emulator.dataset_dir / ENTITY / PROJECT / ".deleted" / run_id / "history.jsonl").read_bytes() == history
    emulator.store.restore_run(ENTITY, PROJECT, run_id)
    assert lookup(emulator, run_id)["name"] == run_id


def test_a_newer_deletion_of_the_same_id_replaces_the_older_one(emulator):
    store = emulator.store
    store.create_run(ENTITY, PROJECT, "again", {"display_name": "first"})
    store.delete_run(store.get_run(ENTITY, PROJECT, "again"))
    store.create_run(ENTITY, PROJECT, "again", {"display_name": "second"})
    store.delete_run(store.get_run(ENTITY, PROJECT, "again"))
    assert store.restore_run(ENTITY, PROJECT, "again").meta["display_name"] == "second"


@pytest.mark.parametrize("action, run_id, status, message", [
    ("restore-run", "never-there", 404, "no deleted run demo/image-classification/never-there"),
    ("delete-run", "never-there", 404, "no run demo/image-classification/never-there"),
    ("restore-run", "../x", 400, "invalid run name '../x'"),
])
def test_bad_delete_and_restore_requests_are_refused_by_name(emulator, action, run_id, status, message):
    r = control(emulator, action, {"entity": ENTITY, "project": PROJECT, "run_id": run_id})
    assert r.status_code == status and r.json() == {"errors": [{"message": message}]}


def test_restoring_over_a_live_run_is_refused(emulator):
    run_id, _, _ = pick_run(emulator.dataset_dir, parquet=True)
    emulator.store.delete_run(emulator.store.get_run(ENTITY, PROJECT, run_id))
    emulator.store.create_run(ENTITY, PROJECT, run_id)
    r = control(emulator, "restore-run", {"entity": ENTITY, "project": PROJECT, "run_id": run_id})
    assert r.status_code == 400
    assert r.json()["errors"][0]["message"] == \
        f"run demo/image-classification/{run_id} exists; only a deleted run can be restored"
    assert run_id in emulator.store.deleted_runs(ENTITY, PROJECT)


def test_a_restored_run_keeps_its_artifacts(emulator, wandb_api):
    producer, consumer = sorted(r.run_id for r in emulator.store.project_runs(ENTITY, PROJECT))[:2]
    art = emulator.store.artifacts.create(ENTITY, PROJECT, type_name="dataset", collection="mnist", digest="d" * 32,
                                          run_id=producer, created_at="2026-11-02T00:00:00Z")
    emulator.store.artifacts.use(emulator.store.get_run(ENTITY, PROJECT, consumer), art)
    for run_id in (producer, consumer):
        control(emulator, "delete-run", {"entity": ENTITY, "project": PROJECT, "run_id": run_id})
        control(emulator, "restore-run", {"entity": ENTITY, "project": PROJECT, "run_id": run_id})
    assert [a.name for a in wandb_api.run(f"{ENTITY}/{PROJECT}/{producer}").logged_artifacts()] == ["mnist:v0"]
    assert [a.name for a in wandb_api.run(f"{ENTITY}/{PROJECT}/{consumer}").used_artifacts()] == ["mnist:v0"]
    # Deleting with deleteArtifacts removes what the run logged, for good.
    emulator.store.delete_run(emulator.store.get_run(ENTITY, PROJECT, producer), delete_artifacts=True)
    emulator.store.restore_run(ENTITY, PROJECT, producer)
    assert list(wandb_api.run(f"{ENTITY}/{PROJECT}/{producer}").logged_artifacts()) == []
