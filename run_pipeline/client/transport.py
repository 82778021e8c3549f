"""HTTP transport for the W&B API: one pooled `requests.Session`, Basic auth, timeouts,
bounded retries with backoff and rate-limit pacing, and mapping of failures to `errors.py`.

The API key lives only in `_ApiKeyAuth`; every message, log line and chained cause that
leaves this module goes through `_Redactor` first.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import requests
import requests.adapters
import requests.auth

from run_pipeline.client.errors import (
    WandbAuthError,
    WandbGaveUpError,
    WandbNotFoundError,
    WandbQueryError,
    WandbRateLimitError,
    WandbTransportError,
)

logger = logging.getLogger("run_pipeline.client")

DEFAULT_BASE_URL = "https://api.wandb.ai"
USER_AGENT = "run_pipeline W&B Public Client"

#: Statuses worth another try: timeouts, rate limits and server errors except 501.
RETRYABLE_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501})


def parse_json(data: bytes | str) -> Any:
    """Parse JSON fast with orjson, falling back to the stdlib for what orjson rejects:
    `NaN`/`Infinity` tokens and integers beyond 64 bits."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            # W&B's own SDK retries JSONString payloads with strict=False (control characters).
            return json.loads(data, strict=False)


# ---------------------------------------------------------------------------------------------
# Retry policy: pure functions, unit-tested without a server


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one logical request.

    `budget` bounds the whole call (all attempts, backoff and pacing waits) in seconds;
    `max_attempts` bounds the number of HTTP attempts.
    """

    max_attempts: int = 20
    budget: float = 120.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    jitter: float = 0.25
    max_pacing_wait: float = 60.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        now = now or datetime.now(timezone.utc)
        return max(0.0, (when - now).total_seconds())
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, 24 * 3600.0)


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `attempt` (0 for the first retry).

    `Retry-After` wins when the server sent one; otherwise exponential backoff
    `base * 2**attempt` with up to `jitter` extra, capped at `backoff_cap`.
    """
    if retry_after is not None:
        return retry_after
    delay = policy.backoff_base * (2.0 ** min(attempt, 30)) * (1.0 + policy.jitter * rand())
    return min(policy.backoff_cap, delay)


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return None if math.isnan(value) else value


class RateLimitPacer:
    """Spreads requests over the server's rate-limit window.

    After a response with `RateLimit-Remaining: r` and `RateLimit-Reset: s`, the next request
    waits `s / r` seconds (all of `s` when nothing remains), so the quota lasts until the reset.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._next_allowed = 0.0
        self._lock = threading.Lock()

    def observe(self, headers: Mapping[str, str]) -> None:
        remaining = _header_float(headers, "RateLimit-Remaining")
        reset = _header_float(headers, "RateLimit-Reset")
        if remaining is None or reset is None or reset <= 0:
            return
        gap = reset if remaining < 1 else reset / remaining
        with self._lock:
            self._next_allowed = max(self._next_allowed, self._clock() + gap)

    def wait_time(self) -> float:
        with self._lock:
            return max(0.0, self._next_allowed - self._clock())


# ---------------------------------------------------------------------------------------------
# Secrets


class _Redactor:
    """Removes the API key (raw and as a Basic-auth token) from text and exceptions."""

    def __init__(self, api_key: str | None):
        secrets = []
        if api_key:
            secrets.append(api_key)
            token = base64.b64encode(f"api:{api_key}".encode()).decode()
            secrets.append(token)
            secrets.append(urllib.parse.quote(api_key, safe=""))
        self._secrets = [s for s in secrets if len(s) >= 4]

    def text(self, value: object) -> str:
        text = str(value)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def exception(self, exc: BaseException, _seen: set[int] | None = None) -> BaseException:
        """Scrub `exc`, its args and its cause/context chain in place; return it."""
        seen = _seen if _seen is not None else set()
        if id(exc) in seen:
            return exc
        seen.add(id(exc))
        new_args = []
        for arg in exc.args:
            if isinstance(arg, BaseException):
                new_args.append(self.exception(arg, seen))
            elif isinstance(arg, str):
                new_args.append(self.text(arg))
            elif isinstance(arg, (int, float, bool, type(None))):
                new_args.append(arg)
            else:
                new_args.append(self.text(arg))
        try:
            exc.args = tuple(new_args)
        except (AttributeError, TypeError):
            pass
        # requests keeps the prepared request (with its Authorization header) on the exception.
        for attr in ("request", "response"):
            if getattr(exc, attr, None) is not None:
                try:
                    setattr(exc, attr, None)
                except AttributeError:
                    pass
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            self.exception(reason, seen)
        for linked in (exc.__cause__, exc.__context__):
            if linked is not None:
                self.exception(linked, seen)
        return exc


def display_url(url: str) -> str:
    """A URL fit for logs and messages: no query string (signed URLs carry tokens), no userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _ApiKeyAuth(requests.auth.AuthBase):
    """HTTP Basic `api:<key>`, sent only to URLs under the API base URL (as wandb-core does):
    signed storage URLs on other hosts never see the key."""

    def __init__(self, api_key: str | None, base_url: str):
        self._header = (
            "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode() if api_key else None
        )
        parts = urllib.parse.urlsplit(base_url)
        self._scheme = parts.scheme
        self._netloc = parts.netloc.lower()
        self._prefix = parts.path.rstrip("/")

    def applies_to(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        return (
            parts.scheme == self._scheme
            and parts.netloc.lower() == self._netloc
            and (parts.path == self._prefix or parts.path.startswith(self._prefix + "/"))
        )

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._header and request.url and self.applies_to(request.url):
            request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<_ApiKeyAuth ***>"


class _RetryableResponse(Exception):
    """A response (or body) that failed in a way another attempt may fix."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------


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
        self.base_url = base_url.rstrip("/")
        self.graphql_url = self.base_url + "/graphql"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._auth = _ApiKeyAuth(api_key, self.base_url)
        self._redact = _Redactor(api_key)
        self._sleep = sleep
        self._clock = clock
        self._pacer = RateLimitPacer(clock)
        self._session = requests.Session()
        # Retries are ours (with budget and taxonomy); urllib3 must not retry underneath.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
        )
        self.stats = {"requests": 0, "retries": 0}

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
            content = resp.content
            try:
                payload = parse_json(content)
            except (ValueError, UnicodeDecodeError) as exc:
                # A 200 that is not JSON is almost always a cut-off body.
                raise _RetryableResponse(
                    f"unparsable response body ({len(content)} bytes)", resp.status_code
                ) from exc
            if not isinstance(payload, dict):
                raise _RetryableResponse("response body is not a JSON object", resp.status_code)
            errors = payload.get("errors")
            if errors:
                messages = "; ".join(
                    str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
                )
                raise WandbQueryError(
                    self.redact(f"GraphQL errors in {op}: {messages}"), errors=errors,
                    status=resp.status_code,
                )
            return payload.get("data") or {}

        return self._send(
            "POST", self.graphql_url, what=f"GraphQL {op}", handle=handle, data=body,
            headers={"Content-Type": "application/json"},
        )

    # -- plain HTTP (files, parquet) ----------------------------------------------------------

    def download(self, url: str, dest: str | os.PathLike, *, chunk_size: int = 1 << 20) -> int:
        """GET `url` into the file `dest` (overwritten), retrying failures mid-stream too.
        Returns the byte count."""
        url = self.absolute_url(url)

        def handle(resp: requests.Response) -> int:
            written = 0
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(chunk_size=chunk_size):
                    fh.write(chunk)
                    written += len(chunk)
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding")
            if expected is not None and not encoded and expected.isdigit() and int(expected) != written:
                raise _RetryableResponse(
                    f"download cut short: {written} of {expected} bytes", resp.status_code
                )
            return written

        return self._send("GET", url, what="download", handle=handle, stream=True)

    def get_bytes(self, url: str) -> bytes:
        url = self.absolute_url(url)
        return self._send("GET", url, what="GET", handle=lambda r: r.content)

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
            try:
                resp = self._session.request(
                    method, url, auth=self._auth, timeout=self._timeout(start), **kwargs
                )
                try:
                    status = resp.status_code
                    self._pacer.observe(resp.headers)
                    if 200 <= status < 300:
                        return handle(resp)
                    if status in RETRYABLE_STATUSES:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        raise _RetryableResponse(
                            f"HTTP {status}: {_error_text(resp)}", status
                        )
                    raise self._status_error(resp, what, shown)
                finally:
                    resp.close()
            except (requests.RequestException, _RetryableResponse) as exc:
                failure: BaseException = self._redact.exception(exc)
                status = getattr(exc, "status", None) if isinstance(exc, _RetryableResponse) else None
            elapsed = self._clock() - start
            delay = retry_delay(attempt - 1, policy, retry_after=retry_after)
            reason = self.redact(_describe(failure))
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

    def _status_error(self, resp: requests.Response, what: str, shown: str) -> Exception:
        status = resp.status_code
        text = self.redact(_error_text(resp))
        message = f"{what} {resp.request.method if resp.request else ''} {shown}: HTTP {status}: {text}"
        if status in (401, 403):
            return WandbAuthError(message)
        if status == 404:
            return WandbNotFoundError(message)
        return WandbQueryError(message, status=status)


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


def _error_text(resp: requests.Response, limit: int = 300) -> str:
    """The server's explanation: GraphQL `errors[*].message` if present, else the body text."""
    try:
        body = resp.content
    except requests.RequestException:
        return resp.reason or ""
    try:
        payload = parse_json(body)
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if errors:
            return "; ".join(
                str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
            )[:limit]
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    text = body[:limit].decode("utf-8", "replace").strip()
    return text or (resp.reason or "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"timeout ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection error ({type(exc).__name__})"
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}"
    return str(exc)


__all__ = [
    "DEFAULT_BASE_URL",
    "RETRYABLE_STATUSES",
    "RateLimitPacer",
    "RetryPolicy",
    "Transport",
    "display_url",
    "parse_json",
    "parse_retry_after",
    "retry_delay",
]
