"""W&B public-API client over `requests`: `Api`, `Run` and friends, built for bulk export.

    from run_pipeline.client import Api
    api = Api()                                    # WANDB_API_KEY / ~/.netrc
    run = api.run("demo/llm-finetune/abc123")
    run.config, run.summary["loss"], run.history(pandas=False)
    for batch in run.iter_history_batches():       # pyarrow.RecordBatch, page by page
        ...
"""

from run_pipeline.client.api import Api, Project, Projects, parse_run_path
from run_pipeline.client.artifacts import Artifact, RunArtifacts
from run_pipeline.client.attrs import User
from run_pipeline.client.batches import JSON_METADATA, batch_to_rows, is_json_field
from run_pipeline.client.errors import (
    WandbAuthError,
    WandbClientError,
    WandbGaveUpError,
    WandbIncompleteDataError,
    WandbMalformedDataError,
    WandbNotFoundError,
    WandbQueryError,
    WandbRateLimitError,
    WandbTransportError,
)
from run_pipeline.client.files import File, Files
from run_pipeline.client.history import HistoryScan
from run_pipeline.client.retry import RetryPolicy
from run_pipeline.client.run import Run
from run_pipeline.client.runs import Runs
from run_pipeline.client.summary import Summary

__all__ = [
    "JSON_METADATA",
    "Api",
    "Artifact",
    "File",
    "Files",
    "HistoryScan",
    "Project",
    "Projects",
    "RetryPolicy",
    "Run",
    "RunArtifacts",
    "Runs",
    "Summary",
    "User",
    "WandbAuthError",
    "WandbClientError",
    "WandbGaveUpError",
    "WandbIncompleteDataError",
    "WandbMalformedDataError",
    "WandbNotFoundError",
    "WandbQueryError",
    "WandbRateLimitError",
    "WandbTransportError",
    "batch_to_rows",
    "is_json_field",
    "parse_run_path",
]
