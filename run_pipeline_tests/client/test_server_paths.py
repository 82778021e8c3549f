"""Every history reader takes the paths W&B serves: the run's exported Parquet first, then the
live tail. A run exported live and later served as Parquet exports to exactly the same rows,
and an incremental export does not download what it already holds."""

from __future__ import annotations

import pytest

from run_pipeline.client import Api
from run_pipeline.export import Exporter
from run_pipeline.warehouse import RunKey, Warehouse

from ..reliability.digest import explain_difference, warehouse_digest
from .conftest import norm, wait_for_parquet

KEYS_RUN_PROJECT = "llm-finetune"


def finished_runs(dataset, emulator=None):
    """Finished runs with history (with `emulator`: those it can serve as exported Parquet)."""
    runs = [d for d in dataset if d.meta["state"] == "finished" and d.history()]
    if emulator is not None:
        store = emulator.store
        runs = [d for d in runs if (rec := store.get_run(d.entity, d.project, d.run_id)) is not None
                and len(rec.history) and store.parquet_schema(rec) is not None]
    return runs


def count_downloads(api) -> list[str]:
    """The URLs `api` downloads from now on (exported Parquet files)."""
    urls: list[str] = []
    download = api._transport.download

    def counted(url, *args, **kwargs):
        urls.append(url)
        return download(url, *args, **kwargs)

    api._transport.download = counted
    return urls


def keyed(rows, keys):
    wanted = ["_step", *keys]
    return [{k: r[k] for k in wanted} for r in rows if all(k in r for k in wanted)]


@pytest.mark.parametrize("mode", ["live", "parquet"])
def test_scan_history_and_history_read_every_row_on_both_paths(api, dataset, emulator, mode):
    emulator.set_parquet_mode(mode)
    d = max(finished_runs(dataset, emulator), key=lambda d: len(d.history()))
    run = api.run(d.path)
    if mode == "parquet":
        wait_for_parquet(run)
    before = api._transport.stats["requests"]
    rows = list(run.scan_history(page_size=50))
    requests = api._transport.stats["requests"] - before
    assert norm(rows) == norm(d.history())
    if mode == "parquet":
        assert requests <= 3  # the plan, the download, nothing paged per 50 steps
    else:
        assert requests > len(d.history()) // 50
    sparse = sorted({k for r in d.history() for k in r if k.startswith("eval/")})[:1]
    assert sparse, "the run logs a sparse eval key"
    got = list(run.scan_history(keys=sparse, page_size=50))
    assert norm(got) == norm(keyed(d.history(), sparse)) and got
    window = list(run.scan_history(min_step=10, max_step=60))
    assert norm(window) == norm([r for r in d.history() if 10 <= r["_step"] < 60])
    sampled = run.history(samples=20, pandas=False)
    assert len(sampled) == min(20, len(d.history()))
    assert {r["_step"] for r in sampled} <= {r["_step"] for r in d.history()}
    with_keys = run.history(samples=10_000, keys=sparse, pandas=False)
    assert norm(with_keys) == norm(keyed(d.history(), sparse))


def test_a_run_exported_live_then_served_as_parquet_exports_the_same_rows(emulator, dataset, tmp_path):
    runs = finished_runs(dataset, emulator)[:3]
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}) as api:
        emulator.set_parquet_mode("live")
        live = Exporter(api, Warehouse(tmp_path / "live"))
        for d in runs:
            live.export_run(RunKey(d.entity, d.project, d.run_id))
        live.warehouse.refresh_catalog()
        # Hours later W&B serves the same runs as exported Parquet: the incremental export has
        # nothing to fetch, and a full export from Parquet lands the same rows.
        emulator.set_parquet_mode("parquet")
        downloads = count_downloads(api)
        for d in runs:
            assert live.export_run(RunKey(d.entity, d.project, d.run_id)).mode == "unchanged"
        assert downloads == []
        parquet = Exporter(api, Warehouse(tmp_path / "parquet"))
        for d in runs:
            assert parquet.export_run(RunKey(d.entity, d.project, d.run_id), full=True).mode == "full"
        parquet.warehouse.refresh_catalog()
    assert warehouse_digest(tmp_path / "live") == warehouse_digest(tmp_path / "parquet"), \
        explain_difference(tmp_path / "live", tmp_path / "parquet")


def test_a_running_run_exported_live_then_finished_as_parquet_has_no_gap_or_duplicate(emulator, dataset, tmp_path):
    d = next(d for d in dataset if d.meta["state"] == "running" and d.history())
    ref = RunKey(d.entity, d.project, d.run_id)
    last = emulator.store.get_run(*ref.path.split("/")).history.last_step
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}) as api:
        exporter = Exporter(api, Warehouse(tmp_path / "wh"))
        assert exporter.export_run(ref).mode == "full"  # live: the run is running
        emulator.store.append_history(d.entity, d.project, d.run_id,
                                      [{"_step": last + i, "train/loss": 1.0 / i} for i in range(1, 40)])
        emulator.store.set_state(d.entity, d.project, d.run_id, "finished")
        emulator.set_parquet_mode("parquet")
        result = exporter.export_run(ref)
        assert result.mode == "incremental" and result.history_rows_written == 39
        assert result.reconciled, result.describe()
        fresh = Exporter(api, Warehouse(tmp_path / "fresh"))
        fresh.export_run(ref, full=True)
        exporter.warehouse.refresh_catalog()
        fresh.warehouse.refresh_catalog()
    assert warehouse_digest(tmp_path / "wh") == warehouse_digest(tmp_path / "fresh"), \
        explain_difference(tmp_path / "wh", tmp_path / "fresh")
