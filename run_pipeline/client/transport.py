"""HTTP transport for the W&B API: GraphQL and file requests sent with Basic auth, timeouts,
bounded retries with backoff and rate-limit pacing. The pooled session is set up in
`session.py`; a failure is read and mapped to `errors.py` in `failures.py`.

The API key lives only in `ApiKeyAuth`; every message, log line and chained cause that
leaves this module goes through `Redactor` first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import requests

from run_pipeline.client.auth import ApiKeyAuth, Redactor, display_url, strip_userinfo
from run_pipeline.client.codec import parse_json
from run_pipeline.client.deadline import deadline
from run_pipeline.client.deadline import extend as extend_deadline
from run_pipeline.client.errors import (
    WandbGaveUpError,
    WandbQueryError,
    WandbRateLimitError,
)
from run_pipeline.client.failures import (
    RetryableResponse,
    connect_failure,
    describe,
    error_text,
    graphql_messages,
    status_error,
)
from run_pipeline.client.retry import (
    RETRYABLE_STATUSES,
    RateLimitPacer,
    RetryPolicy,
    parse_retry_after,
    retry_delay,
)
from run_pipeline.client.session import open_session

logger = logging.getLogger("run_pipeline.client")

DEFAULT_BASE_URL = "https://api.wandb.ai"
USER_AGENT = "run_pipeline W&B Public Client"
#: Response bodies are read this many bytes at a time. requests' own `.content` reads 10 KiB
#: at a time, and a history page of a few MiB then costs about twice the CPU to receive.
BODY_READ_SIZE = 1 << 20
#: A download averaging at least this many bytes a second may run past its retry budget (the
#: budget is every request's deadline otherwise): a large Parquet file is not a trickle.
MIN_DOWNLOAD_RATE = 256 * 1024


class Transport:
    """Sends GraphQL documents and file requests to one W&B server.

    Thread-safe for concurrent use of the same instance (the pool is shared).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        pool_maxsize: int = 10,
        user_agent: str = USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = strip_userinfo(base_url).rstrip("/")
        self.graphql_url = self.base_url + "/graphql"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._auth = ApiKeyAuth(api_key, self.base_url)
        self._redact = Redactor(api_key)
        self._sleep = sleep
        self._clock = clock
        self._pacer = RateLimitPacer(clock)
        self._session = open_session(self._auth, pool_maxsize=pool_maxsize, user_agent=user_agent)
        self.stats = {"requests": 0, "retries": 0}
        # Retries are for a server that answered before: until one does, a connection that
        # cannot be made (refused, unknown host) fails at once instead of using the budget.
        self._answered = False

    def __repr__(self) -> str:
        return f"<Transport {self.base_url}>"

    def close(self) -> None:
        self._session.close()

    def redact(self, text: object) -> str:
        return self._redact.text(text)

    def absolute_url(self, url: str) -> str:
        """W&B may hand out relative URLs (`/files/...`); they are relative to the base URL."""
        if url.startswith("/"):
            return self.base_url + url
        return url

    # -- GraphQL -----------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a document; return `data`. GraphQL `errors` raise `WandbQueryError` at once."""
        op = _operation_name(query)
        body = _dump_body({"query": query, "variables": dict(variables or {})})

        def handle(resp: requests.Response) -> dict[str, Any]:
            content = _read_body(resp)
            try:
                payload = parse_json(content)
            except (ValueError, UnicodeDecodeError) as exc:
                # A 200 that is not JSON is almost always a cut-off body.
                raise RetryableResponse(
                    f"unparsable response body ({len(content)} bytes)", resp.status_code
                ) from exc
            if not isinstance(payload, dict):
                raise RetryableResponse("response body is not a JSON object", resp.status_code)
            errors = payload.get("errors")
            if errors:
                raise WandbQueryError(
                    self.redact(f"GraphQL errors in {op}: {graphql_messages(errors)}"), errors=errors,
                    status=resp.status_code,
                )
            return payload.get("data") or {}

        return self._send(
            "POST", self.graphql_url, what=f"GraphQL {op}", handle=handle, data=body,
            headers={"Content-Type": "application/json"}, stream=True,
        )

    # -- plain HTTP (files, parquet) ----------------------------------------------------------

    def download(self, url: str, dest: str | os.PathLike, *, chunk_size: int = 1 << 20,
                 memory_limit: int = -1) -> int | bytes:
        """GET `url` into the file `dest` (created or overwritten), retrying failures mid-stream
        too. Returns the byte count; or, when the response says its body has at most
        `memory_limit` bytes (and does not encode it), the body itself, and `dest` is left
        alone (a small file costs no file to create, write, read back and delete)."""
        url = self.absolute_url(url)

        def handle(resp: requests.Response) -> int | bytes:
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding")
            expected = int(expected) if expected is not None and expected.isdigit() else None
            if expected is not None and not encoded and expected <= memory_limit:
                body = _read_body(resp)
                if len(body) != expected:
                    raise RetryableResponse(f"download cut short: {len(body)} of {expected} bytes",
                                            resp.status_code)
                return body
            written = 0
            started = time.monotonic()
            read_timeout = self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(chunk_size=chunk_size):
                    fh.write(chunk)
                    written += len(chunk)
                    # A large file arriving at a useful rate may outlast the budget; a trickle
                    # may not (see `deadline.py`).
                    if written >= MIN_DOWNLOAD_RATE * max(1.0, time.monotonic() - started):
                        extend_deadline(read_timeout)
            if expected is not None and not encoded and expected != written:
                raise RetryableResponse(
                    f"download cut short: {written} of {expected} bytes", resp.status_code
                )
            return written

        return self._send("GET", url, what="download", handle=handle, stream=True)

    def get_bytes(self, url: str) -> bytes:
        url = self.absolute_url(url)
        return self._send("GET", url, what="GET", handle=_read_body, stream=True)

    def get_tail(self, url: str, size: int) -> bytes | None:
        """The last `size` bytes of `url` by an HTTP suffix range, or None when the server does
        not serve ranges (the body is then not read)."""
        url = self.absolute_url(url)

        def handle(resp: requests.Response) -> bytes | None:
            return _read_body(resp) if resp.status_code == 206 else None

        return self._send("GET", url, what="GET range", handle=handle, stream=True,
                          headers={"Range": f"bytes=-{int(size)}"})

    def put(self, url: str, data: bytes, headers: Mapping[str, str] | None = None) -> None:
        url = self.absolute_url(url)
        self._send("PUT", url, what="upload", handle=lambda r: None, data=data,
                   headers=dict(headers or {}))

    # -- the retry loop -----------------------------------------------------------------------

    def _send(self, method: str, url: str, *, what: str,
              handle: Callable[[requests.Response], Any], **kwargs: Any) -> Any:
        policy = self.retry
        start = self._clock()
        attempt = 0
        shown = display_url(url)
        while True:
            pace = min(self._pacer.wait_time(), policy.max_pacing_wait)
            if pace > 0:
                remaining = policy.budget - (self._clock() - start)
                self._sleep(max(0.0, min(pace, remaining)))
            attempt += 1
            self.stats["requests"] += 1
            retry_after = None
            status: int | None = None
            # A wall-clock deadline for the whole attempt, body included: the budget's end.
            watch = None
            try:
                with deadline(time.monotonic() + policy.budget - (self._clock() - start)) as watch:
                    resp = self._session.request(
                        method, url, auth=self._auth, timeout=self._timeout(start), **kwargs
                    )
                    self._answered = True
                    try:
                        status = resp.status_code
                        self._pacer.observe(resp.headers)
                        if 200 <= status < 300:
                            return handle(resp)
                        if status in RETRYABLE_STATUSES:
                            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                            raise RetryableResponse(
                                f"HTTP {status}: {error_text(resp, self._redact)}", status
                            )
                        raise status_error(resp, what, shown, self._redact)
                    finally:
                        resp.close()
            except (requests.RequestException, RetryableResponse) as exc:
                failure: BaseException = self._redact.exception(exc)
                status = exc.status if isinstance(exc, RetryableResponse) else None
                unreachable = None if self._answered else connect_failure(exc)
                if unreachable:
                    raise WandbGaveUpError(
                        f"cannot reach the server at {display_url(self.base_url)} ({unreachable}) "
                        f"on {what} {method} {shown}", attempts=attempt, elapsed=self._clock() - start,
                    ) from failure
                if watch is not None and watch.expired:
                    failure = RetryableResponse(
                        f"no complete answer within the budget of {policy.budget:.0f}s", status)
                    failure.__cause__ = self._redact.exception(exc)
            elapsed = self._clock() - start
            delay = retry_delay(attempt - 1, policy, retry_after=retry_after)
            reason = self.redact(describe(failure))
            if attempt >= policy.max_attempts or elapsed + delay > policy.budget:
                cls = WandbRateLimitError if status == 429 else WandbGaveUpError
                raise cls(
                    f"gave up on {what} {method} {shown} after {attempt} attempt(s) in "
                    f"{elapsed:.1f}s (budget {policy.budget:.0f}s): {reason}",
                    status=status, attempts=attempt, elapsed=elapsed,
                ) from failure
            self.stats["retries"] += 1
            logger.warning(
                "%s %s %s failed (%s); retry %d in %.2fs", what, method, shown, reason,
                attempt, delay,
            )
            self._sleep(delay)

    def _timeout(self, start: float) -> float | tuple[float, float]:
        remaining = max(1.0, self.retry.budget - (self._clock() - start))
        if isinstance(self.timeout, tuple):
            return (min(self.timeout[0], remaining), min(self.timeout[1], remaining))
        return min(self.timeout, remaining)


def _read_body(resp: requests.Response) -> bytes:
    """The whole body of a response sent with `stream=True`, read in large pieces (failures
    mid-body raise requests' exceptions, as `.content` would)."""
    return b"".join(resp.iter_content(BODY_READ_SIZE))


def _dump_body(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:
        # orjson refuses integers beyond 64 bits; the stdlib writes them exactly.
        return json.dumps(payload).encode()


def _operation_name(query: str) -> str:
    tokens = query.replace("(", " ").replace("{", " ").split()
    for i, tok in enumerate(tokens[:-1]):
        if tok in ("query", "mutation"):
            return tokens[i + 1]
    return "query"


__all__ = [
    "DEFAULT_BASE_URL",
    "RETRYABLE_STATUSES",
    "RateLimitPacer",
    "RetryPolicy",
    "Transport",
    "display_url",
    "parse_retry_after",
    "retry_delay",
]
