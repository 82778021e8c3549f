"""What went wrong with one request, in words and in the error taxonomy (`errors.py`): the
server's own explanation from an error body, a status mapped to its error class, a connection
that could not be made told apart from one that broke. Every text is redacted before use."""

from __future__ import annotations

import socket

import requests

from run_pipeline.client.auth import Redactor
from run_pipeline.client.codec import parse_json
from run_pipeline.client.errors import (
    WandbAuthError,
    WandbNotFoundError,
    WandbQueryError,
)

#: Bytes of an error body looked at (redacted, then cut to `limit` characters).
_ERROR_BODY_BYTES = 64 * 1024


class RetryableResponse(Exception):
    """A response (or body) that failed in a way another attempt may fix."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def status_error(resp: requests.Response, what: str, shown: str, redactor: Redactor) -> Exception:
    """The error for a final (not retried) HTTP status: auth, not found, or a query error."""
    status = resp.status_code
    text = error_text(resp, redactor)
    method = resp.request.method if resp.request else ""
    message = f"{what} {method} {shown}: HTTP {status}: {text}"
    if status in (401, 403):
        return WandbAuthError(message)
    if status == 404:
        return WandbNotFoundError(message)
    return WandbQueryError(message, status=status, errors=_error_list(resp))


def graphql_messages(errors: list) -> str:
    """GraphQL `errors[*].message`, joined."""
    return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)


def error_text(resp: requests.Response, redactor: Redactor, limit: int = 300) -> str:
    """The server's explanation: GraphQL `errors[*].message` if present, else the body text;
    redacted before it is cut, so a key echoed across the cut cannot show in part."""
    try:
        body = resp.content
    except requests.RequestException:
        return redactor.text(resp.reason or "")
    text = None
    try:
        payload = parse_json(body)
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if errors:
            text = graphql_messages(errors)
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        pass
    if text is None:
        text = body[:_ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    text = redactor.text(text[:_ERROR_BODY_BYTES])[:limit]
    return text or redactor.text(resp.reason or "")


def _error_list(resp: requests.Response) -> list:
    try:
        payload = parse_json(resp.content)
    except (ValueError, UnicodeDecodeError, requests.RequestException):
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return list(errors) if isinstance(errors, list) else []


def connect_failure(exc: BaseException) -> str | None:
    """Why a connection could not be made at all (refused, unknown host, connect timeout), in
    words; None for any other failure (a reset or a cut-off answer came from a live server)."""
    if not isinstance(exc, requests.ConnectionError):
        return None
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror) or type(item).__name__ == "NameResolutionError":
            return "the host name does not resolve"
        todo.extend(a for a in item.args if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(item, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    return None


def describe(exc: BaseException) -> str:
    """A failure in a few words, for the retry log line and the final error."""
    if isinstance(exc, requests.Timeout):
        return f"timeout ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection error ({type(exc).__name__})"
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}"
    return str(exc)
