"""The pooled `requests` session under `Transport`: one connection pool per server whose
connections honour the request deadline, no retries underneath ours, the environment's proxy
settings read once per host, and the key kept to URLs under the base URL across redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from run_pipeline.client.auth import ApiKeyAuth
from run_pipeline.client.deadline import DeadlineAdapter


class _Session(requests.Session):
    """A Session that reads the proxy and CA settings of the environment once per host rather
    than on every request (requests scans all of `os.environ` each time, which cost more than
    parsing a history page on short runs)."""

    def __init__(self, key_auth: ApiKeyAuth | None = None) -> None:
        super().__init__()
        self._environment: dict[tuple, dict[str, Any]] = {}
        self._key_auth = key_auth

    def rebuild_auth(self, prepared_request, response):  # noqa: ANN001 - requests' API
        """On a redirect requests keeps `Authorization` for the same host whatever the path;
        the key goes only to URLs under the base URL, so it is dropped elsewhere."""
        super().rebuild_auth(prepared_request, response)
        if self._key_auth is not None:
            prepared_request.headers.pop("Authorization", None)
            self._key_auth(prepared_request)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: ANN001 - requests' API
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream, verify, cert)
        settings = self._environment.get(key)
        if settings is None:
            settings = self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return dict(settings)


def open_session(key_auth: ApiKeyAuth, *, pool_maxsize: int, user_agent: str) -> requests.Session:
    """A session for one server, sending `user_agent` and accepting compressed answers."""
    session = _Session(key_auth)
    # Retries are ours (with budget and taxonomy); urllib3 must not retry underneath.
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})
    return session
