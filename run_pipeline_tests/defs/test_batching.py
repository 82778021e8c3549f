"""Batched sensor requests: bounded Dagster runs per tick, each a partition range Dagster accepts."""

from __future__ import annotations

import pytest

from run_pipeline.defs.batching import BLOCK_TAG, batch_requests, requested_partitions
from run_pipeline.defs.partitions import encode_partition_key
from run_pipeline.warehouse import RunKey


def keys(n: int, project: str = "p") -> list[str]:
    return [encode_partition_key(RunKey("e", project, f"r{i:05d}")) for i in range(n)]


def test_three_thousand_finished_runs_make_a_bounded_number_of_dagster_runs():
    order = keys(3000)
    requests = batch_requests({k: f"{k}@finished" for k in order}, order, 25, job_name="wandb_export_job")
    assert len(requests) == 120
    covered = [k for r in requests for k in requested_partitions(r, order)]
    assert covered == order  # every run once, none twice
    assert all(len(requested_partitions(r, order)) == 25 for r in requests)
    assert len({r.tags[BLOCK_TAG] for r in requests}) == 120
    assert len({r.run_key for r in requests}) == 120


def test_scattered_runs_go_by_block_and_a_lone_run_is_a_plain_partition_request():
    order = keys(100)
    found = {order[i]: f"{order[i]}@finished" for i in (3, 7, 24, 25, 99)}
    requests = batch_requests(found, order, 25, job_name="j")
    assert [requested_partitions(r, order) for r in requests] == [order[3:25], [order[25]], [order[99]]]
    assert requests[1].partition_key == order[25] and requests[1].run_key == found[order[25]]
    assert [r.tags[BLOCK_TAG] for r in requests] == ["25-0", "25-1", "25-3"]
    # The same finds give the same run keys (a repeated tick launches nothing new).
    assert [r.run_key for r in batch_requests(found, order, 25, job_name="j")] == [r.run_key for r in requests]


def test_a_found_run_without_a_partition_is_refused():
    with pytest.raises(ValueError, match="1 found runs have no partition"):
        batch_requests({"e/p/zz": "k"}, keys(3), 25, job_name="j")
    with pytest.raises(ValueError, match="at least 1"):
        batch_requests({}, [], 0, job_name="j")
