"""`export_runs`: many runs exported in a pool of worker processes land exactly what a
one-process export lands, and a run that fails is reported by name while the others land."""

from __future__ import annotations

from run_pipeline.client import Api
from run_pipeline.discovery import discover_runs
from run_pipeline.pool import export_runs
from run_pipeline.warehouse import Warehouse

from .reliability.digest import warehouse_digest

ENTITY, PROJECT = "demo", "rl-agents"


def _export(emulator, root, **kwargs):
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}) as api:
        found = discover_runs(api, ENTITY, PROJECT)
        outcomes = list(export_runs(api, Warehouse(root), found, **kwargs))
    Warehouse(root).refresh_catalog()
    return found, outcomes


def test_a_pool_of_processes_lands_what_one_process_lands(emulator, tmp_path):
    found, one = _export(emulator, tmp_path / "one", workers=1)
    _, pooled = _export(emulator, tmp_path / "pool", workers=2, processes=True)
    assert len(found) >= 8
    assert [o.error for o in pooled] == [None] * len(found)
    assert sorted(o.target.key.path for o in pooled) == sorted(f.key.path for f in found)
    by_run = {o.target.key.path: o.result for o in one}
    for o in pooled:
        expected = by_run[o.target.key.path]
        assert (o.result.history_rows_written, o.result.system_rows_total, o.result.mode) == (
            expected.history_rows_written, expected.system_rows_total, expected.mode)
        assert o.result.reconciled
    assert warehouse_digest(tmp_path / "pool") == warehouse_digest(tmp_path / "one")


def test_a_run_deleted_meanwhile_is_named_as_deleted_and_the_others_land(emulator, tmp_path):
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}) as api:
        found = discover_runs(api, ENTITY, PROJECT)
        doomed = found[3].key
        emulator.store.delete_run(emulator.store.require_run(doomed.entity, doomed.project, doomed.run_id))
        outcomes = list(export_runs(api, Warehouse(tmp_path), found, workers=2, processes=True))
    assert [o.key.path for o in outcomes if o.deleted] == [doomed.path]
    assert not [o.error for o in outcomes if o.error]
    assert sum(o.result is not None for o in outcomes) == len(found) - 1
