"""Cross-check: the real `wandb` SDK (0.31) and this client read the same runs from the emulator
and must agree on config, summary, system metrics, history rows and files."""

from __future__ import annotations

import pytest

from run_pipeline.client import batch_to_rows

from .conftest import norm

pytest.importorskip("wandb")


def _present(row: dict) -> dict:
    return {k: v for k, v in row.items() if v is not None}


def _picked(dataset):
    """The showcase run, the late-starting run, one running run and a few ordinary ones."""
    by_size = sorted(dataset, key=lambda d: (d.dir / "history.jsonl").stat().st_size)
    late = [d for d in dataset if d.history()[0]["_step"] == 61010]
    running = [d for d in dataset if d.meta["state"] == "running"][:1]
    picks = [by_size[-1], *late, *running, by_size[0], by_size[len(by_size) // 2]]
    chosen = {d.path: d for d in picks}
    return list(chosen.values())


def test_sdk_and_client_agree(wandb_api, api, dataset, tmp_path):
    for d in _picked(dataset):
        theirs = wandb_api.run(d.path)
        ours = api.run(d.path)

        assert ours.id == theirs.id and ours.name == theirs.name and ours.state == theirs.state
        assert ours.tags == theirs.tags and ours.notes == theirs.notes
        assert ours.created_at == theirs.created_at
        assert ours.storage_id == theirs.storage_id
        assert ours.path == theirs.path
        assert ours.lastHistoryStep == theirs.lastHistoryStep
        assert ours.config == theirs.config
        assert norm(dict(ours.summary)) == norm(dict(theirs.summary._json_dict))
        assert ours.system_metrics == theirs.system_metrics
        assert ours.history_keys["lastStep"] == theirs.history_keys["lastStep"]

        # The SDK's parquet path fills keys missing at a step with None; a sparse row has none.
        their_rows = [_present(r) for r in theirs.scan_history(page_size=1000)]
        our_rows = [r for b in ours.iter_history_batches() for r in batch_to_rows(b)]
        assert len(our_rows) == len(their_rows) == len(d.history()), d.path
        assert norm(our_rows) == norm(their_rows), d.path
        assert norm(list(ours.scan_history())) == norm(their_rows), d.path

        n_events = len(d.system())
        if n_events:
            their_sys = [_present(r) for r in
                         theirs.history(stream="system", pandas=False, samples=n_events)]
            our_sys = [r for b in ours.iter_system_metrics_batches() for r in batch_to_rows(b)]
            assert norm(our_sys) == norm(their_sys), d.path

        their_files = {f.name: (f.size, f.md5) for f in theirs.files()}
        our_files = {f.name: (f.size, f.md5) for f in ours.files()}
        assert our_files == their_files
        for name in list(our_files)[:3]:
            their_path = tmp_path / "theirs" / d.run_id
            theirs.file(name).download(root=str(their_path), replace=True).close()
            assert ours.file(name).read_bytes() == (their_path / name).read_bytes()


def test_sdk_and_client_list_the_same_runs(wandb_api, api):
    for order in ("+created_at", "-created_at"):
        theirs = wandb_api.runs("demo/image-classification", order=order, per_page=2)
        ours = api.runs("demo/image-classification", order=order, per_page=2)
        assert [r.id for r in ours] == [r.id for r in theirs]
        assert len(ours) == len(theirs)
    filters = {"state": "finished"}
    theirs = wandb_api.runs("demo/rl-agents", filters=filters)
    ours = api.runs("demo/rl-agents", filters=filters)
    assert [r.id for r in ours] == [r.id for r in theirs]
    assert [r.config for r in ours] == [r.config for r in theirs]
