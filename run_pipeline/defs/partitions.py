"""One dynamic partition per W&B run, keyed `entity/project/run_id`: the partitions definition
and the codec between a run's `RunKey` and its partition key."""

from __future__ import annotations

from urllib.parse import quote, unquote

import dagster as dg

from run_pipeline.settings import RUNS_PARTITIONS
from run_pipeline.warehouse import RunKey

wandb_runs_partitions = dg.DynamicPartitionsDefinition(name=RUNS_PARTITIONS)

# Characters Dagster partition keys must not contain (and "%", our escape), plus "/" which
# separates the three parts. Existing Dagster instances hold keys encoded this way: changing
# the encoding would orphan their partitions.
_KEY_UNSAFE = set("/%|,[]")


def _encode_part(value: str) -> str:
    out = "".join(quote(c, safe="") if c in _KEY_UNSAFE or not c.isprintable() else c for c in value)
    return out.replace("...", "%2E%2E%2E")


def encode_partition_key(run: RunKey) -> str:
    """The run's partition key: `entity/project/run_id`, each part escaped."""
    return "/".join(_encode_part(p) for p in (run.entity, run.project, run.run_id))


def decode_partition_key(key: str) -> RunKey:
    """The run a partition key names; `ValueError` when it is not `entity/project/run_id`."""
    parts = key.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"partition key {key!r} is not entity/project/run_id")
    return RunKey(*(unquote(p) for p in parts))
