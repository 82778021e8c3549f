"""Shared pieces of the response-backed objects: the snake_case attribute fallback, `User`,
and small value helpers (JSONString → value, W&B DateTime → aware UTC, run ids)."""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timezone
from typing import Any

from run_pipeline.client.codec import parse_json


def snake_to_camel(string: str) -> str:
    """`job_type` → `jobType`, as W&B's `Attrs.snake_to_camel` does."""
    camel = "".join(part.title() for part in string.split("_"))
    return camel[:1].lower() + camel[1:]


class Attrs:
    """Read-only attribute access to a GraphQL response dict: `obj.size_bytes` reads
    `sizeBytes` (W&B's generic fallback)."""

    _attrs: dict[str, Any]

    def snake_to_camel(self, string: str) -> str:
        return snake_to_camel(string)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attrs = self.__dict__.get("_attrs") or {}
        key = snake_to_camel(name)
        if key in attrs:
            return attrs[key]
        if name in attrs:
            return attrs[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def parse_document(value: Any) -> Any:
    """JSONString → the value it holds, whatever its type and depth (absent or empty: `{}`;
    already-parsed values pass through). Raises `ValueError` when it is not JSON."""
    if value is None or value == "":
        return {}
    if not isinstance(value, (str, bytes)):
        return value
    return parse_json(value)


def parse_datetime(value: str | None) -> datetime | None:
    """W&B's `DateTime` ("2024-01-02T00:00:00", UTC without zone) → aware UTC datetime."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def generate_id(length: int = 8) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class User(Attrs):
    """A W&B user (`name`, `username`, `email`, `entity`, ...) from a response."""

    def __init__(self, client: Any, attrs: dict[str, Any]):
        self._api = client
        self._attrs = dict(attrs or {})

    def __repr__(self) -> str:
        return f"<User {self._attrs.get('username') or self._attrs.get('name')}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and other._attrs == self._attrs
