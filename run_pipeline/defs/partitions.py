"""One dynamic partition per W&B run, keyed `entity/project/run_id`."""

from __future__ import annotations

import dagster as dg

from run_pipeline.export import RunRef
from run_pipeline.settings import RUNS_PARTITIONS

wandb_runs_partitions = dg.DynamicPartitionsDefinition(name=RUNS_PARTITIONS)

__all__ = ["RunRef", "wandb_runs_partitions"]
