"""Error taxonomy of the W&B client: one base class, one subclass per thing a caller can act on.

`WandbTransportError` (and its `WandbGaveUpError` / `WandbRateLimitError` children) means
"retry later"; `WandbQueryError` means "the request is wrong"; `WandbNotFoundError` means
"that object does not exist"; `WandbAuthError` means "fix the credentials".
"""

from __future__ import annotations


class WandbClientError(Exception):
    """Base class of every error raised by `run_pipeline.client`."""


class WandbAuthError(WandbClientError):
    """The server rejected the credentials (HTTP 401/403, or no viewer for the key)."""


class WandbNotFoundError(WandbClientError):
    """The entity, project, run, file or artifact does not exist (null in the response or 404)."""


class WandbQueryError(WandbClientError):
    """The server refused the request itself: GraphQL errors, 400, 409, 422 and similar.

    Retrying the same request will not help. `errors` holds the GraphQL error objects, if any.
    """

    def __init__(self, message: str, *, errors: list | None = None, status: int | None = None):
        super().__init__(message)
        self.errors = list(errors or [])
        self.status = status


class WandbTransportError(WandbClientError):
    """The network or the server failed in a way that may go away: connection errors,
    timeouts, 5xx, truncated or unparsable responses."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class WandbGaveUpError(WandbTransportError):
    """Retries were exhausted (attempt limit or time budget) on a retryable failure."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0,
                 elapsed: float = 0.0):
        super().__init__(message, status=status)
        self.attempts = attempts
        self.elapsed = elapsed


class WandbRateLimitError(WandbGaveUpError):
    """Gave up while the server kept answering 429 Too Many Requests."""


class WandbIncompleteDataError(WandbClientError):
    """The server returned fewer (or more) rows than it says it holds."""


class WandbMalformedDataError(WandbClientError):
    """A run's field cannot be read as what it must be (a config that is not JSON, a summary
    that is not an object): that run cannot be exported, the others can."""


__all__ = [
    "WandbAuthError",
    "WandbClientError",
    "WandbGaveUpError",
    "WandbIncompleteDataError",
    "WandbMalformedDataError",
    "WandbNotFoundError",
    "WandbQueryError",
    "WandbRateLimitError",
    "WandbTransportError",
]
