"""One writer per run on an object store: a lock object created with S3's conditional write.

`PutObject` with `If-None-Match: *` succeeds only if no object has the key, atomically on the
store's side (S3 since 2024; MinIO, R2 and moto's server honour it), so of two hosts that try
at once exactly one creates `<root>/_staging/locks/<run token>.lock`; the other waits and
retries. Releasing deletes the object. Nothing here is a clock-based lease: the store decides
who holds the lock. A holder that died (host lost, SIGKILL) leaves its object behind; once it
is older than `stale_after` by the store's own `LastModified`, a waiter replaces it with
`If-Match: <its ETag>`, which again only one waiter can win. An export that holds a lock for
longer than `stale_after` can therefore be overlapped: keep it well above the longest export.

pyarrow exposes no conditional put, so this speaks S3 through botocore, configured like the
pyarrow filesystem of the root (its endpoint and keys when it was given them, else the usual
AWS variables such as `AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pyarrow.fs as pafs

from .errors import WarehouseLockError

#: How often a waiter asks the store again.
POLL_SECONDS = 0.2
#: A lock object older than this is taken over (its holder died); above any export's length.
STALE_SECONDS = 6 * 3600


def _client(fs: pafs.FileSystem):
    try:
        import botocore.session
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - botocore is a dependency
        raise WarehouseLockError("an s3:// warehouse needs botocore for its per-run lock objects") from exc
    kwargs: dict = {}
    if isinstance(fs, pafs.S3FileSystem):
        # The filesystem's own settings (an endpoint_override for MinIO or a test server).
        reduced = fs.__reduce__()[1]  # pickling's view of the constructor arguments
        settings = reduced[0] if reduced else {}
        if settings.get("endpoint_override"):
            scheme = settings.get("scheme") or "https"
            endpoint = settings["endpoint_override"]
            kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
        if settings.get("access_key"):
            kwargs["aws_access_key_id"] = settings["access_key"]
            kwargs["aws_secret_access_key"] = settings.get("secret_key")
            kwargs["aws_session_token"] = settings.get("session_token") or None
        if settings.get("region"):
            kwargs["region_name"] = settings["region"]
    session = botocore.session.get_session()
    return session.create_client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}), **kwargs)


def _conflict(exc) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # 412: the condition failed (the key exists / changed); 409: a concurrent conditional
    # write to the same key is in flight.
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


@contextmanager
def object_lock(fs: pafs.FileSystem, path: str, what: str, *, timeout: float | None = None,
                stale_after: float) -> Iterator[None]:
    """Hold the lock object at `path` (`bucket/key` on `fs`) while the block runs; `what` names
    the run in errors. Waits for another holder; with `timeout` gives up with
    `WarehouseLockError`."""
    from botocore.exceptions import ClientError

    bucket, _, key = path.partition("/")
    client = _client(fs)
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "acquired_at": datetime.now(timezone.utc).isoformat()}).encode()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except ClientError as exc:
            if not _conflict(exc):
                raise WarehouseLockError(f"{what}: cannot create lock object s3://{path}: {exc}") from exc
        if _take_over_if_stale(client, bucket, key, body, stale_after):
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise WarehouseLockError(f"{what}: another export of it has held s3://{path} for more than "
                                     f"{timeout:g}s")
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def _take_over_if_stale(client, bucket: str, key: str, body: bytes, stale_after: float) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False  # released meanwhile: the next put may win
    age = (datetime.now(timezone.utc) - head["LastModified"]).total_seconds()
    if age < stale_after:
        return False
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=head["ETag"])
        return True
    except ClientError as exc:
        if _conflict(exc) or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
