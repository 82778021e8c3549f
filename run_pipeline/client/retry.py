"""Retry policy for W&B HTTP calls, as pure functions: which statuses to retry, backoff with
jitter, `Retry-After`, and pacing by `RateLimit-Remaining` / `RateLimit-Reset`."""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

#: Statuses worth another try: timeouts, rate limits and server errors except 501.
RETRYABLE_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501})



@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one logical request.

    `budget` bounds the whole call (all attempts, backoff and pacing waits) in seconds;
    `max_attempts` bounds the number of HTTP attempts.

    `backoff_cap` stays well under `budget` so the budget holds many attempts: with a 60 s cap
    only 7 fit in 120 s (1+2+…+32 s, then a 64 s wait overruns), and at a 30% rate of transient
    errors about one request in 5,000 failed for good; with 10 s about 14 fit.
    """

    max_attempts: int = 20
    budget: float = 120.0
    backoff_base: float = 1.0
    backoff_cap: float = 10.0
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
