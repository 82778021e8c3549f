"""Jobs: export run partitions; refresh the DuckDB catalog."""

from __future__ import annotations

import dagster as dg

from .assets import wandb_catalog, wandb_run_tables

wandb_export_job = dg.define_asset_job(
    "wandb_export_job",
    selection=dg.AssetSelection.assets(wandb_run_tables),
    description="Export W&B runs (one partition per run) into Parquet.",
)
wandb_catalog_job = dg.define_asset_job(
    "wandb_catalog_job",
    selection=dg.AssetSelection.assets(wandb_catalog),
    description="Refresh the DuckDB views over the warehouse.",
)
