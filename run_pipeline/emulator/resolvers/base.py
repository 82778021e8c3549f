"""What every resolver uses: the request's store and URL builder, Relay cursors and
connections over a list, and W&B's User object."""

from __future__ import annotations

import base64
import json
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from ..store import Store


def store_of(info: GraphQLResolveInfo) -> Store:
    return info.context["store"]


def urls_of(info: GraphQLResolveInfo):
    return info.context["urls"]


def cursor(key: Any) -> str:
    return base64.b64encode(json.dumps(key, default=str).encode()).decode()


def uncursor(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(base64.b64decode(value))
    except ValueError as exc:
        raise GraphQLError(f"invalid cursor {value!r}") from exc


def page(items: list, after: str | None, first: int | None) -> dict:
    """A connection over a list ordered by position; cursors are positions."""
    start = 0
    if after:
        pos = uncursor(after)
        if not isinstance(pos, int):
            raise GraphQLError(f"invalid cursor {after!r}")
        start = pos + 1
    end = len(items) if first is None else start + max(first, 0)
    window = items[start:end]
    edges = [{"node": x, "cursor": cursor(start + i)} for i, x in enumerate(window)]
    return {
        "edges": edges,
        "pageInfo": {"startCursor": edges[0]["cursor"] if edges else None,
                     "endCursor": edges[-1]["cursor"] if edges else None,
                     "hasNextPage": end < len(items), "hasPreviousPage": start > 0},
        "totalCount": len(items),
    }


def user_node(meta_user: Any, fallback: str | None = None) -> dict | None:
    if not meta_user and not fallback:
        return None
    u = meta_user or {}
    username = u.get("username") or fallback
    return {"id": base64.b64encode(f"User:{username}".encode()).decode(), "name": u.get("name") or username,
            "username": username, "email": u.get("email"), "admin": False, "flags": "{}",
            "entity": username, "deletedAt": None, "apiKeys": {"edges": []}, "teams": {"edges": []}}

