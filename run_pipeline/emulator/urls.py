"""Signed, self-authorising URLs for downloads, uploads and Parquet history (W&B hands out
signed storage URLs that need no auth header; the SDK's Range reads send none)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from urllib.parse import quote


class Signer:
    def __init__(self, secret: bytes | None = None):
        self.secret = secret or secrets.token_bytes(32)

    def sign(self, payload: dict) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{mac}"

    def verify(self, token: str) -> dict | None:
        body, _, mac = token.rpartition(".")
        if not body or not hmac.compare_digest(mac, hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]):
            return None
        try:
            return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None


class UrlBuilder:
    """Builds the absolute URLs the GraphQL API hands out for one request's base URL."""

    def __init__(self, base_url: str, signer: Signer):
        self.base = base_url.rstrip("/")
        self.signer = signer

    def file_url(self, entity: str, project: str, run_id: str, name: str) -> str:
        parts = "/".join(quote(p, safe="") for p in (entity, project, run_id))
        return f"{self.base}/files/{parts}/{quote(name)}"

    def direct_url(self, entity: str, project: str, run_id: str, name: str) -> str:
        token = self.signer.sign({"k": "get", "e": entity, "p": project, "r": run_id, "n": name})
        return f"{self.base}/storage/{token}/{quote(name.rsplit('/', 1)[-1])}"

    def upload_url(self, entity: str, project: str, run_id: str, name: str) -> str:
        token = self.signer.sign({"k": "put", "e": entity, "p": project, "r": run_id, "n": name})
        return f"{self.base}/storage/{token}/{quote(name.rsplit('/', 1)[-1])}"

    def parquet_url(self, cache_name: str, run_id: str) -> str:
        token = self.signer.sign({"k": "parquet", "f": cache_name})
        return f"{self.base}/storage/{token}/{quote(run_id, safe='')}.runhistory.parquet"
