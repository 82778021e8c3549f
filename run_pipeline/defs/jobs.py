"""Jobs: export run partitions; refresh the DuckDB catalog."""

from __future__ import annotations

import dagster as dg

from .assets import wandb_catalog, wandb_run_tables


def build_export_job(run_tables: dg.AssetsDefinition, tags: dict[str, str] | None = None
                     ) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "wandb_export_job",
        selection=dg.AssetSelection.assets(run_tables),
        tags=tags,
        description="Export W&B runs (one partition per run) into Parquet.",
    )


def build_catalog_job(catalog: dg.AssetsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "wandb_catalog_job",
        selection=dg.AssetSelection.assets(catalog),
        description="Refresh the DuckDB views over the warehouse.",
    )


wandb_export_job = build_export_job(wandb_run_tables)
wandb_catalog_job = build_catalog_job(wandb_catalog)
