"""Batched run requests: the W&B runs a sensor tick found go into Dagster runs of up to N runs
each, every one a partition range of the run assets.

Dagster runs a partition range, not a set: the range is every key between its first and its
last in the dynamic partitions' order (the order they were added). So a batch is a window of at
most N consecutive partitions of one project that starts at a found run; a partition inside
the window that was not found (a run still running, or one already exported) is exported too,
which is harmless because exports are incremental. Runs registered together (a fresh
deployment, or a sweep) sit next to each other, so a tick that finds 3,000 finished runs of a
project launches about 3,000 / N Dagster runs, and never more Dagster runs than W&B runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import dagster as dg

from .partitions import RunRef

# Dagster's run tags for a partition range (what a backfill of a range sets on its runs).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# One tag value per W&B project: tag concurrency limits per project follow W&B's rate limits.
PROJECT_TAG = "wandb/project"
RUNS_TAG = "wandb/runs"


def batch_requests(found: Mapping[str, str], order: Sequence[str], size: int, *, job_name: str,
                   tags: Mapping[str, str] | None = None) -> list[dg.RunRequest]:
    """Run requests for the found runs (partition key → run key), in windows of at most `size`
    consecutive partitions of `order` (every partition key, in Dagster's order). A window of
    one partition is a plain partition request; longer ones carry Dagster's range tags."""
    if size < 1:
        raise ValueError(f"runs per Dagster run must be at least 1, got {size}")
    position = {key: i for i, key in enumerate(order)}
    missing = [k for k in found if k not in position]
    if missing:
        raise ValueError(f"{len(missing)} found runs have no partition, e.g. {missing[0]!r}")
    windows: list[list[str]] = []
    for key in sorted(found, key=position.__getitem__):
        last = windows[-1] if windows else None
        if last and _project(last[0]) == _project(key) and position[key] - position[last[0]] < size:
            last.append(key)
        else:
            windows.append([key])
    requests = []
    for window in windows:
        first, end = window[0], window[-1]
        digest = hashlib.sha1("\n".join(found[k] for k in window).encode()).hexdigest()[:16]
        base = {**(tags or {}), PROJECT_TAG: _project(first), RUNS_TAG: str(position[end] - position[first] + 1)}
        if first == end:
            requests.append(dg.RunRequest(partition_key=first, job_name=job_name, run_key=found[first], tags=base))
        else:
            requests.append(dg.RunRequest(job_name=job_name, run_key=f"{first}..{end}@{digest}",
                                          tags={**base, RANGE_START_TAG: first, RANGE_END_TAG: end}))
    return requests


def requested_partitions(request: dg.RunRequest, order: Sequence[str]) -> list[str]:
    """The partition keys a request (plain or range) runs, given the partitions' order."""
    if request.partition_key is not None:
        return [request.partition_key]
    start, end = order.index(request.tags[RANGE_START_TAG]), order.index(request.tags[RANGE_END_TAG])
    return list(order[start:end + 1])


def _project(partition_key: str) -> str:
    ref = RunRef.from_partition_key(partition_key)
    return f"{ref.entity}/{ref.project}"
