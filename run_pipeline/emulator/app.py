"""HTTP routes of the emulator: /graphql, file downloads, signed storage URLs (Range-capable
Parquet history, PUT uploads) and the control endpoint that lets runs progress during tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import socket
import struct
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    execute,
    parse,
    validate,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .faults import FaultInjector, RateLimiter
from .profiles import null_result
from .resolvers import Root
from .schema import FastListExecutionContext, load_schema
from .store import Store
from .urls import Signer, UrlBuilder

log = logging.getLogger(__name__)
ROOT = Root()


class InjectedFault(Exception):
    """Raised after a response has started, so the server drops the connection mid-response."""


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj, allow_nan=False, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


def _graphql_json(body: dict, status: int, headers: dict | None) -> Response:
    """A GraphQL response body, written by orjson (history pages are megabytes of strings) and
    meaning what `_json` would write. orjson would write a non-finite float as null where
    json.dumps refuses it, but none reaches a GraphQL result: every leaf went through a scalar
    serializer, Float rejects them and JSON spells them as strings. Where orjson refuses
    (integers beyond 64 bits, lone surrogates, and datetimes and dataclasses, which json.dumps
    rejects) `_json` writes the body."""
    try:
        content = orjson.dumps(body, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    except TypeError:
        return _json(body, status, headers)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


class _LargeChunkFileResponse(FileResponse):
    """Exported history is read in 1 MiB chunks (starlette's 64 KiB cost a thread hop each)."""

    chunk_size = 1024 * 1024


def _error(message: str, status: int, headers: dict | None = None) -> Response:
    return _json({"errors": [{"message": message}]}, status, headers)


@functools.lru_cache(maxsize=512)
def _checked_document(query: str) -> tuple[DocumentNode | None, list[GraphQLError]]:
    """Parse and validate a query once: clients send the same few documents over and over,
    and validation is most of graphql-core's time per request."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return None, [exc]
    return document, validate(load_schema(), document)


class EmulatorApp:
    def __init__(self, store: Store, api_key: str, *, faults: FaultInjector | None = None,
                 rate_limiter: RateLimiter | None = None, signer: Signer | None = None):
        self.store = store
        self._api_key = api_key
        self.faults = faults or FaultInjector()
        self.rate_limiter = rate_limiter or RateLimiter()
        self.signer = signer or Signer()
        self.requests_served = 0
        self.starlette = Starlette(routes=[
            Route("/graphql", self.graphql, methods=["POST"]),
            Route("/files/{entity}/{project}/{run_id}/{name:path}", self.download, methods=["GET", "HEAD"]),
            Route("/storage/{token}/{fname:path}", self.storage, methods=["GET", "HEAD", "PUT"]),
            Route("/_control/{action:path}", self.control, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
        ])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.starlette(scope, receive, send)
        path = scope["path"]
        kind = self.faults.pick(path)
        if kind in ("429", "500", "502", "503"):
            status = int(kind)
            headers = {"Retry-After": f"{self.faults.config.retry_after:g}"} if status == 429 else None
            return await _error(f"injected fault {status}", status, headers)(scope, receive, send)
        if kind == "slow":
            await asyncio.sleep(self.faults.config.slow_seconds)
        if kind == "reset":
            return await self._reset(send)
        if kind == "truncate":
            return await self._truncated(scope, receive, send)
        self.requests_served += 1
        return await self.starlette(scope, receive, send)

    async def _reset(self, send) -> None:
        """Drop the connection with no response at all (a TCP reset), as a peer reset would.
        ASGI has no verb for that; uvicorn's `send` is bound to the cycle that holds the transport."""
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is None:  # another server: the closest ASGI gets is headers and no body
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]})
            raise InjectedFault("injected connection reset")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)  # let the server see the connection gone before the app returns

    async def _truncated(self, scope, receive, send):
        """Run the request normally but cut the body in half and drop the connection."""
        started: dict = {}

        async def cut(message):
            if message["type"] == "http.response.start":
                started.update(message)
                return
            if message["type"] == "http.response.body" and started:
                body = message.get("body", b"")
                await send({**started, "headers": [(k, v) for k, v in started["headers"] if k != b"content-length"]
                            + [(b"content-length", str(len(body) + 1).encode())]})
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise InjectedFault("injected truncated body")

        await self.starlette(scope, receive, cut)

    # -- auth ----------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, key = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == "api" and hmac.compare_digest(key.encode(), self._api_key.encode())

    def _deny(self) -> Response:
        return _error("invalid API key: HTTP Basic auth with user 'api' and a valid key is required", 401,
                      {"WWW-Authenticate": 'Basic realm="wandb"'})

    def _urls(self, request: Request) -> UrlBuilder:
        return UrlBuilder(str(request.base_url), self.signer)

    # -- routes --------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return _json({"ok": True})

    async def graphql(self, request: Request) -> Response:
        authorized = self._authorized(request)
        if not authorized and "viewer-null" not in self.store.profiles:
            return self._deny()
        allowed, rl_headers = self.rate_limiter.check()
        if not allowed:
            return _error("rate limit exceeded", 429, rl_headers)
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return _error(f"request body is not valid JSON: {exc}", 400, rl_headers)
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _error("request body must be a JSON object with a 'query' string", 400, rl_headers)
        variables = payload.get("variables") or {}
        if not isinstance(variables, dict):
            return _error("'variables' must be a JSON object", 400, rl_headers)
        context = {"store": self.store, "urls": self._urls(request)}
        document, errors = _checked_document(payload["query"])
        if errors:
            result = ExecutionResult(None, errors)
        elif not authorized:  # the viewer-null profile: W&B's 200 with nothing in it
            result = null_result(load_schema(), document, payload.get("operationName") or None, variables)
        else:
            result = execute(load_schema(), document, root_value=ROOT, context_value=context,
                             variable_values=variables, operation_name=payload.get("operationName") or None,
                             execution_context_class=FastListExecutionContext)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
            for e in result.errors:
                if e.original_error is not None and not isinstance(e.original_error, GraphQLError):
                    log.error("resolver failed on %s", e.path, exc_info=e.original_error)
        status = 400 if result.errors and result.data is None else 200
        return _graphql_json(body, status, rl_headers)

    async def download(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._deny()
        p = request.path_params
        run = self.store.get_run(p["entity"], p["project"], p["run_id"])
        return self._serve_run_file(run, p["name"])

    def _serve_run_file(self, run, name: str) -> Response:
        if run is None:
            return _error("run not found", 404)
        try:
            path = run.file_path(name)
        except ValueError as exc:
            return _error(str(exc), 400)
        if not path.is_file():
            return _error(f"file {name!r} not found", 404)
        return FileResponse(path)

    async def storage(self, request: Request) -> Response:
        claims = self.signer.verify(request.path_params["token"])
        if claims is None:
            return _error("invalid or expired signed URL", 403)
        kind = claims.get("k")
        if kind == "parquet" and request.method in ("GET", "HEAD"):
            path = self.store.cache_dir / claims["f"]
            if not path.is_file():
                return _error("history export no longer available", 404)
            return _LargeChunkFileResponse(path, media_type="application/octet-stream")
        run = self.store.get_run(claims["e"], claims["p"], claims["r"])
        if kind == "get" and request.method in ("GET", "HEAD"):
            return self._serve_run_file(run, claims["n"])
        if kind == "put" and request.method == "PUT":
            if run is None:
                return _error("run not found", 404)
            try:
                self.store.write_file(run, claims["n"], await request.body())
            except ValueError as exc:
                return _error(str(exc), 400)
            return Response(status_code=200)
        return _error("signed URL does not allow this method", 405)

    async def control(self, request: Request) -> Response:
        """POST /_control/<action>: see README.md, "Driving runs during tests"."""
        if not self._authorized(request):
            return self._deny()
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return _error(f"request body is not valid JSON: {exc}", 400)
        from .control import apply_control

        try:
            result = apply_control(self, request.path_params["action"], body)
        except KeyError as exc:
            return _error(str(exc.args[0]) if exc.args else "not found", 404)
        except (ValueError, TypeError) as exc:
            return _error(str(exc), 400)
        return _json(result)
