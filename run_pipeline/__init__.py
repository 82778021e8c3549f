"""run_pipeline: W&B runs into Parquet and DuckDB. `run_pipeline.WandbExportComponent` is the
Dagster component (imported on first use, so `run_pipeline.client` never loads Dagster)."""

_LAZY = {"WandbExportComponent": "run_pipeline.defs.component"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'run_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
