"""Operator knobs for reliability testing: seeded fault injection and a request-rate limit
that answers like W&B (RateLimit-Remaining / RateLimit-Reset headers, 429 with Retry-After)."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field

FAULT_KINDS = ("429", "500", "502", "503", "reset", "truncate", "slow")
DEFAULT_PATHS = ("/graphql", "/files/", "/storage/")


@dataclass
class FaultConfig:
    """Each kind fires with its probability on requests whose path starts with one of `paths`."""

    seed: int = 0
    rates: dict[str, float] = field(default_factory=dict)
    paths: tuple[str, ...] = DEFAULT_PATHS
    slow_seconds: float = 2.0
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        bad = {k: p for k, p in self.rates.items() if not 0 <= p <= 1}
        if bad or sum(self.rates.values()) > 1:
            raise ValueError(f"fault probabilities must be in [0, 1] and sum to at most 1, got {self.rates}")
        self.paths = tuple(self.paths)


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.configure(config)

    def configure(self, config: FaultConfig | None) -> None:
        """Apply `config` and restart its seeded sequence. `injected` counts the faults injected
        since the last non-None config, so clearing faults keeps the counts for inspection."""
        with self._lock:
            self.config = config or FaultConfig()
            self._rng = random.Random(self.config.seed)
            if config is not None:
                self.injected = {}

    def pick(self, path: str) -> str | None:
        """The fault to inject into this request, or None."""
        cfg = self.config
        if not cfg.rates or not path.startswith(cfg.paths):
            return None
        with self._lock:
            x = self._rng.random()
            acc = 0.0
            for kind in FAULT_KINDS:
                acc += cfg.rates.get(kind, 0.0)
                if x < acc:
                    self.injected[kind] = self.injected.get(kind, 0) + 1
                    return kind
        return None


class RateLimiter:
    """A fixed-window limit of `limit` requests per `window` seconds (None: unlimited)."""

    def __init__(self, limit: int | None = None, window: float = 1.0):
        self._lock = threading.Lock()
        self.configure(limit, window)

    def configure(self, limit: int | None, window: float = 1.0) -> None:
        if limit is not None and limit < 1:
            raise ValueError("rate limit must be at least 1 request per window")
        with self._lock:
            self.limit, self.window = limit, window
            self._start, self._count = time.monotonic(), 0

    def check(self) -> tuple[bool, dict[str, str]]:
        """(allowed, headers to add to the response)."""
        if self.limit is None:
            return True, {}
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self.window:
                self._start, self._count = now, 0
            reset = max(self.window - (now - self._start), 0.0)
            self._count += 1
            remaining = self.limit - self._count
            headers = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": f"{max(remaining, 0):.0f}",
                       "RateLimit-Reset": f"{reset:.3f}"}
            if remaining < 0:
                headers["Retry-After"] = str(max(1, math.ceil(reset)))
                return False, headers
            return True, headers
