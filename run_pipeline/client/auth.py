"""Credentials on the wire and off the record: Basic auth sent only under the base URL, and
redaction of the API key from text and exceptions."""

from __future__ import annotations

import base64
import urllib.parse

import requests
import requests.auth

#: Any run of this many characters of the key (or of its Basic-auth token) is redacted: a
#: cut-off or partly echoed key must not show either.
SECRET_RUN = 8


class Redactor:
    """Removes the API key (raw, URL-quoted and as a Basic-auth token) from text and exceptions,
    and any run of `SECRET_RUN` or more of their characters."""

    def __init__(self, api_key: str | None):
        secrets = []
        if api_key:
            secrets.append(api_key)
            token = base64.b64encode(f"api:{api_key}".encode()).decode()
            secrets.append(token)
            secrets.append(urllib.parse.quote(api_key, safe=""))
        self._secrets = [s for s in secrets if len(s) >= 4]
        self._runs = frozenset(s[i:i + SECRET_RUN] for s in self._secrets
                               for i in range(len(s) - SECRET_RUN + 1))

    def __repr__(self) -> str:
        return "<Redactor ***>"

    def text(self, value: object) -> str:
        text = str(value)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if not self._runs or len(text) < SECRET_RUN:
            return text
        # Mark every character covered by a run of the key, then replace each marked stretch.
        covered_until = -1
        spans: list[list[int]] = []
        for i in range(len(text) - SECRET_RUN + 1):
            if text[i:i + SECRET_RUN] in self._runs:
                if spans and i <= covered_until:
                    spans[-1][1] = i + SECRET_RUN
                else:
                    spans.append([i, i + SECRET_RUN])
                covered_until = i + SECRET_RUN
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append("***")
            last = end
        out.append(text[last:])
        return "".join(out)

    def exception(self, exc: BaseException, _seen: set[int] | None = None) -> BaseException:
        """Scrub `exc`, its args and its cause/context chain in place; return it."""
        seen = _seen if _seen is not None else set()
        if id(exc) in seen:
            return exc
        seen.add(id(exc))
        new_args = []
        for arg in exc.args:
            if isinstance(arg, BaseException):
                new_args.append(self.exception(arg, seen))
            elif isinstance(arg, str):
                new_args.append(self.text(arg))
            elif isinstance(arg, (int, float, bool, type(None))):
                new_args.append(arg)
            else:
                new_args.append(self.text(arg))
        try:
            exc.args = tuple(new_args)
        except (AttributeError, TypeError):
            pass
        # requests keeps the prepared request (with its Authorization header) on the exception.
        for attr in ("request", "response"):
            if getattr(exc, attr, None) is not None:
                try:
                    setattr(exc, attr, None)
                except AttributeError:
                    pass
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            self.exception(reason, seen)
        for linked in (exc.__cause__, exc.__context__):
            if linked is not None:
                self.exception(linked, seen)
        return exc


def strip_userinfo(url: str) -> str:
    """`url` without `user:password@` (kept nowhere: requests ignores it when an auth object
    is given, as every request here has)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def display_url(url: str) -> str:
    """A URL fit for logs and messages: no query string (signed URLs carry tokens), no userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class ApiKeyAuth(requests.auth.AuthBase):
    """HTTP Basic `api:<key>`, sent only to URLs under the API base URL (as wandb-core does):
    signed storage URLs on other hosts never see the key."""

    def __init__(self, api_key: str | None, base_url: str):
        self._header = (
            "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode() if api_key else None
        )
        parts = urllib.parse.urlsplit(base_url)
        self._scheme = parts.scheme
        self._netloc = parts.netloc.lower()
        self._prefix = parts.path.rstrip("/")

    @property
    def api_key(self) -> str | None:
        """The key itself (for handing a client to a child process; never for display)."""
        if self._header is None:
            return None
        return base64.b64decode(self._header.removeprefix("Basic ")).decode().split(":", 1)[1]

    def applies_to(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        return (
            parts.scheme == self._scheme
            and parts.netloc.lower() == self._netloc
            and (parts.path == self._prefix or parts.path.startswith(self._prefix + "/"))
        )

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._header and request.url and self.applies_to(request.url):
            request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<ApiKeyAuth ***>"
