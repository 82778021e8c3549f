"""Batched run requests: the W&B runs a sensor tick found go into Dagster runs of up to N runs
each, every one a partition range of the run assets.

Dagster runs a partition range, not a set: the range is every key between its first and its
last in the dynamic partitions' order (the order they were added). So the order is cut into
fixed blocks of N consecutive partitions (block b holds positions b*N .. b*N+N-1), and a tick
requests one Dagster run per block holding found runs: the range from the block's first found
run to its last. A partition inside that range that was not found (a run still running, or
one already exported) is exported too, which is harmless because exports are incremental.
Runs registered together (a fresh deployment, a sweep) sit in the same blocks, so a tick that
finds 3,000 finished runs launches about 3,000 / N Dagster runs, never more than one per run.

Dagster 1.13's `RunRequest` takes no range argument (`partition_key_range` is a read-only view
of the range tags); the range tags are what it accepts, dynamic partitions included, through
the sensor daemon and the run queue (`e2e/test_multi_host.py`, `e2e/test_dagster_dev.py`).

Blocks are the same for every host of one Dagster instance (they share its partitions), so
each request carries its block as the `wandb/block` tag: a run-queue tag concurrency limit of
1 per unique value keeps two Dagster runs of the same W&B runs from running at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import dagster as dg

# Dagster's run tags for a partition range (what a backfill of a range sets on its runs).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BLOCK_TAG = "wandb/block"
RUNS_TAG = "wandb/found_runs"


def batch_requests(found: Mapping[str, str], order: Sequence[str], size: int, *, job_name: str,
                   tags: Mapping[str, str] | None = None) -> list[dg.RunRequest]:
    """Run requests for the found runs (partition key → run key), one per block of `size`
    consecutive partitions of `order` (every partition key, in Dagster's order). A block with
    one found run is a plain partition request; others carry Dagster's range tags."""
    if size < 1:
        raise ValueError(f"runs per Dagster run must be at least 1, got {size}")
    position = {key: i for i, key in enumerate(order)}
    missing = [k for k in found if k not in position]
    if missing:
        raise ValueError(f"{len(missing)} found runs have no partition, e.g. {missing[0]!r}")
    blocks: dict[int, list[str]] = {}
    for key in sorted(found, key=position.__getitem__):
        blocks.setdefault(position[key] // size, []).append(key)
    requests = []
    for block, keys in sorted(blocks.items()):
        first, end = keys[0], keys[-1]
        base = {**(tags or {}), BLOCK_TAG: f"{size}-{block}", RUNS_TAG: str(len(keys))}
        if first == end:
            requests.append(dg.RunRequest(partition_key=first, job_name=job_name, run_key=found[first], tags=base))
        else:
            # Found again (same runs, same states and heartbeats): the same key, so no new run.
            digest = hashlib.sha256("\n".join(found[k] for k in keys).encode()).hexdigest()[:24]
            requests.append(dg.RunRequest(job_name=job_name, run_key=f"{BLOCK_TAG}={size}-{block}@{digest}",
                                          tags={**base, RANGE_START_TAG: first, RANGE_END_TAG: end}))
    return requests


def requested_partitions(request: dg.RunRequest, order: Sequence[str]) -> list[str]:
    """The partition keys a request (plain or range) runs, given the partitions' order."""
    if request.partition_key is not None:
        return [request.partition_key]
    start, end = order.index(request.tags[RANGE_START_TAG]), order.index(request.tags[RANGE_END_TAG])
    return list(order[start:end + 1])
