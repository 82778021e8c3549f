"""The wire limit: the requests an exporter cannot avoid (list runs, ask for the exported
Parquet, download it or page `history(minStep, maxStep, samples)`), with the bytes discarded
unparsed. The same plan drives plain `requests` (the `wire` contender) and the emulator's ASGI
app called in-process without sockets (serve-only throughput)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

LIST_RUNS = """
query BenchRuns($entity: String!, $project: String!, $cursor: String, $filters: JSONString) {
  project(name: $project, entityName: $entity) {
    runs(filters: $filters, after: $cursor, first: 100, order: "+created_at") {
      edges { node { name historyKeys } }
      pageInfo { endCursor hasNextPage }
    }
  }
}
"""

PARQUET_URLS = """
query BenchParquet($entity: String!, $project: String!, $run: String!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { parquetHistory(liveKeys: ["_step"]) { parquetUrls } }
  }
}
"""

HISTORY_PAGE = """
query BenchHistory($entity: String!, $project: String!, $run: String!, $minStep: Int64!,
                   $maxStep: Int64!, $samples: Int!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { history(minStep: $minStep, maxStep: $maxStep, samples: $samples) }
  }
}
"""

Post = Callable[[dict], bytes]
Get = Callable[[str], int]


@dataclass
class WireStats:
    runs: int = 0
    graphql: int = 0
    downloads: int = 0
    bytes: int = 0


def run_plan(post: Post, get: Get, *, entity: str, projects: list[str], since: str | None = None,
             min_steps: dict[str, int] | None = None, page_size: int = 1000,
             use_parquet: bool = True) -> WireStats:
    """Fetch every listed run's history once. Only the small control answers (run list,
    Parquet URLs) are parsed; history bytes are counted and dropped."""
    stats = WireStats()

    def gql(query: str, variables: dict) -> bytes:
        body = post({"query": query, "variables": variables})
        stats.graphql += 1
        stats.bytes += len(body)
        return body

    filters = json.dumps({"heartbeatAt": {"$gte": since}}) if since else None
    for project in projects:
        runs, cursor = [], None
        while True:
            data = json.loads(gql(LIST_RUNS, {"entity": entity, "project": project, "cursor": cursor,
                                              "filters": filters}))["data"]["project"]["runs"]
            for edge in data["edges"]:
                keys = edge["node"]["historyKeys"] or {}
                runs.append((edge["node"]["name"], int(keys.get("lastStep", -1))))
            if not data["pageInfo"]["hasNextPage"]:
                break
            cursor = data["pageInfo"]["endCursor"]
        for name, last_step in runs:
            stats.runs += 1
            variables = {"entity": entity, "project": project, "run": name}
            if use_parquet:
                run = json.loads(gql(PARQUET_URLS, variables))["data"]["project"]["run"]
                urls = run["parquetHistory"]["parquetUrls"]
                if urls:
                    for url in urls:
                        stats.bytes += get(url)
                        stats.downloads += 1
                    continue
            a = (min_steps or {}).get(f"{entity}/{project}/{name}", 0)
            while a <= last_step:
                gql(HISTORY_PAGE, {**variables, "minStep": a, "maxStep": a + page_size, "samples": page_size + 1})
                a += page_size
    return stats


def requests_transport(base_url: str, api_key: str) -> tuple[Post, Get, Callable[[], None]]:
    import requests

    session = requests.Session()
    session.auth = ("api", api_key)
    graphql_url = base_url.rstrip("/") + "/graphql"

    def post(payload: dict) -> bytes:
        response = session.post(graphql_url, json=payload, timeout=60)
        response.raise_for_status()
        return response.content

    def get(url: str) -> int:
        size = 0
        with session.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
        return size

    return post, get, session.close


class InProcessTransport:
    """Calls an ASGI app directly (no sockets, no HTTP parsing): what serving alone costs."""

    def __init__(self, app, base_url: str, api_key: str):
        self.app = app
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.auth = b"Basic " + base64.b64encode(f"api:{api_key}".encode())
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def _call(self, method: str, path: str, query: bytes, body: bytes, headers: list) -> bytes:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
                 "root_path": "", "server": (self.host, self.port), "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", f"{self.host}:{self.port}".encode()), *headers]}
        chunks: list[bytes] = []
        status: list[int] = []
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        self.loop.run_until_complete(self.app(scope, receive, send))
        if not status or status[0] >= 400:
            raise RuntimeError(f"{method} {path}: status {status}")
        return b"".join(chunks)

    def post(self, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        return self._call("POST", "/graphql", b"", body,
                          [(b"authorization", self.auth), (b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode())])

    def get(self, url: str) -> int:
        parts = urlsplit(url)
        return len(self._call("GET", parts.path, parts.query.encode(), b"", []))
