"""A loopback HTTP proxy in front of the emulator that can rewrite its answers: for what the
emulator's own fault injection does not produce (GraphQL errors, HTTP 400, documents that are
not JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

from ..loopback import QuietHandler, serve

#: hook(operation name, status, body) -> (status, body): what the client receives instead.
Hook = Callable[[str, int, bytes], tuple[int, bytes]]


def operation_name(body: bytes) -> str:
    """The GraphQL operation a request body sends (`query Runs(...)` -> "Runs")."""
    try:
        query = json.loads(body).get("query", "")
    except (ValueError, AttributeError):
        return ""
    tokens = query.replace("(", " ").replace("{", " ").split()
    for i, token in enumerate(tokens[:-1]):
        if token in ("query", "mutation"):
            return tokens[i + 1]
    return ""


@contextmanager
def rewriting_proxy(upstream: str, hook: Hook) -> Iterator[str]:
    """Forward every request to `upstream`; GraphQL answers pass through `hook`. Yields the
    proxy's base URL."""
    session = requests.Session()

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            r = session.request(self.command, upstream + self.path, data=body or None, headers=headers,
                                timeout=60)
            status, content = r.status_code, r.content
            if self.path.startswith("/graphql"):
                status, content = hook(operation_name(body), status, content)
            self.send_response(status)
            self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _forward

    try:
        with serve(Handler) as base:
            yield base
    finally:
        session.close()
