"""JSON for values nested deeper than the stdlib can follow: an iterative decoder and encoder.

`json.loads` and `json.dumps` recurse once per level and raise `RecursionError` past about a
thousand levels (orjson refuses past 1,024); a run's config nested 3,000 levels deep is still a
config to store. These walk with an explicit stack, so depth costs memory, not stack. They are
the fallbacks, taken only when the fast codecs raise `RecursionError`; on everything the stdlib
accepts they give its results (the decoder accepts `NaN`/`Infinity` tokens as it does).
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
from typing import Any

_WS = " \t\n\r"
_LITERALS = (("true", True), ("false", False), ("null", None), ("NaN", math.nan),
             ("Infinity", math.inf), ("-Infinity", -math.inf))
_scanstring = json.decoder.scanstring
_number = json.scanner.NUMBER_RE


def loads(text: str | bytes) -> Any:
    """Parse JSON text of any depth (raises `json.JSONDecodeError` on malformed text)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    n = len(text)
    # Each frame: [container, the key awaiting its value (objects only)].
    stack: list[list[Any]] = []
    result: Any = None
    have_result = False

    def skip(i: int) -> int:
        while i < n and text[i] in _WS:
            i += 1
        return i

    def fail(msg: str, i: int):
        raise json.JSONDecodeError(msg, text, i)

    def read_key(i: int) -> tuple[str, int]:
        """An object key and its colon at i; returns the key and where its value starts."""
        if i >= n or text[i] != '"':
            fail("Expecting property name enclosed in double quotes", i)
        key, i = _scanstring(text, i + 1)
        i = skip(i)
        if i >= n or text[i] != ":":
            fail("Expecting ':' delimiter", i)
        return key, skip(i + 1)

    i = skip(0)
    while True:
        # Parse one value at i (or open a container).
        if i >= n:
            fail("Expecting value", i)
        ch = text[i]
        value: Any
        if ch == "{" or ch == "[":
            container: Any = {} if ch == "{" else []
            stack.append([container, None])
            i = skip(i + 1)
            closer = "}" if ch == "{" else "]"
            if i < n and text[i] == closer:
                stack.pop()
                value, i = container, i + 1
            elif ch == "{":
                stack[-1][1], i = read_key(i)
                continue
            else:
                continue
        elif ch == '"':
            value, i = _scanstring(text, i + 1)
        else:
            match = _number.match(text, i)
            if match is not None:
                integer, frac, exp = match.groups()
                value = float(integer + (frac or "") + (exp or "")) if frac or exp else int(integer)
                i = match.end()
            else:
                for word, literal in _LITERALS:
                    if text.startswith(word, i):
                        value, i = literal, i + len(word)
                        break
                else:
                    fail("Expecting value", i)
        # Attach the value to its container, closing containers as they end.
        while True:
            if not stack:
                result, have_result = value, True
                break
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, dict):
                container[frame[1]] = value
            else:
                container.append(value)
            i = skip(i)
            closer = "}" if isinstance(container, dict) else "]"
            if i < n and text[i] == ",":
                i = skip(i + 1)
                if isinstance(container, dict):
                    frame[1], i = read_key(i)
                break
            if i < n and text[i] == closer:
                stack.pop()
                value, i = container, i + 1
                continue
            fail(f"Expecting ',' delimiter or '{closer}'", i)
        if have_result:
            end = skip(i)
            if end != n:
                fail("Extra data", end)
            return result


class _Piece(str):
    """Text the encoder writes as it is (punctuation), told apart from string values."""


_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_LIST, _CLOSE_LIST, _COMMA = map(_Piece, "{}[],")


def dumps(value: Any, *, default=str) -> str:
    """Compact JSON text of any depth, non-ASCII kept, as `json.dumps(value, ensure_ascii=False,
    separators=(",", ":"), allow_nan=False, default=default)` writes it, except that non-finite
    floats become the strings "NaN", "Infinity" and "-Infinity" (as the warehouse stores them)."""
    encode_string = json.encoder.encode_basestring
    out: list[str] = []
    todo: list[Any] = [value]  # values still to write, and pieces of punctuation, last first
    while todo:
        item = todo.pop()
        if type(item) is _Piece:
            out.append(item)
            continue
        if isinstance(item, str):
            out.append(encode_string(item))
        elif item is None:
            out.append("null")
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif isinstance(item, int):
            out.append(int.__repr__(item))
        elif isinstance(item, float):
            if math.isfinite(item):
                out.append(float.__repr__(item))
            elif math.isnan(item):
                out.append('"NaN"')
            else:
                out.append(encode_string("Infinity" if item > 0 else "-Infinity"))
        elif isinstance(item, dict):
            pieces: list[Any] = [_CLOSE_OBJECT]
            for n, (k, v) in enumerate(reversed(list(item.items()))):
                pieces.append(v)
                pieces.append(_Piece(encode_string(_key(k, default)) + ":"))
                if n < len(item) - 1:
                    pieces.append(_COMMA)
            pieces.append(_OPEN_OBJECT)
            todo.extend(pieces)
        elif isinstance(item, (list, tuple)):
            pieces = [_CLOSE_LIST]
            for n, v in enumerate(reversed(item)):
                pieces.append(v)
                if n < len(item) - 1:
                    pieces.append(_COMMA)
            pieces.append(_OPEN_LIST)
            todo.extend(pieces)
        else:
            todo.append(default(item))
    return "".join(out)


def _key(key: Any, default) -> str:
    """An object key as `json.dumps` writes it (str, numbers and literals as their JSON text)."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return json.dumps(key)
    return str(default(key))
