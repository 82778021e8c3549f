"""What the CLI reads from the environment: `.env` in the working directory (as `dagster dev`
loads it; a variable already set wins), W&B's own variables, ours, and AWS's for `s3://`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from run_pipeline.settings import DEFAULT_BASE_URL, DEFAULT_WAREHOUSE


def load_dotenv_file(directory: Path | None = None) -> Path | None:
    """Load `<directory or cwd>/.env` without overriding the environment; the path if loaded."""
    from dotenv import load_dotenv

    path = (directory or Path.cwd()) / ".env"
    if not path.is_file():
        return None
    load_dotenv(path, override=False)
    return path


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def csv_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def warehouse_root(flag: str | None) -> tuple[str, str]:
    """(root, where it came from): a local root is made absolute."""
    if flag:
        root, source = flag, "--warehouse"
    elif env("RUN_PIPELINE_WAREHOUSE"):
        root, source = env("RUN_PIPELINE_WAREHOUSE"), "RUN_PIPELINE_WAREHOUSE"
    else:
        root, source = DEFAULT_WAREHOUSE, "the default ./warehouse"
    return (root if "://" in root else str(Path(root).expanduser().absolute())), source


def base_url(flag: str | None) -> tuple[str, str]:
    """(W&B API URL, where it came from)."""
    if flag:
        return flag, "--base-url"
    if env("WANDB_BASE_URL"):
        return env("WANDB_BASE_URL"), "WANDB_BASE_URL"
    return DEFAULT_BASE_URL, "the default"


def s3_options() -> dict | None:
    """Credentials and endpoint for `s3://` from the usual AWS variables (None: none set, and
    botocore's own chain applies: ~/.aws files, instance roles)."""
    opts: dict = {}
    for key, name in (("key_id", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                      ("session_token", "AWS_SESSION_TOKEN")):
        if env(name):
            opts[key] = env(name)
    region = env("AWS_REGION") or env("AWS_DEFAULT_REGION")
    if region:
        opts["region"] = region
    endpoint = env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint"] = endpoint
    return opts or None


def pyarrow_s3(opts: dict | None):
    """A pyarrow S3 filesystem for the same options (None: let pyarrow infer it from the URI)."""
    if not opts or not opts.get("endpoint"):
        return None
    import pyarrow.fs as pafs

    parts = urlsplit(opts["endpoint"])
    return pafs.S3FileSystem(access_key=opts.get("key_id"), secret_key=opts.get("secret"),
                             session_token=opts.get("session_token"), region=opts.get("region"),
                             endpoint_override=parts.netloc, scheme=parts.scheme or "https")
