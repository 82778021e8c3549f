"""The client's JSON codec: orjson's speed with W&B's values kept exact. orjson reads an
integer beyond 64 bits as a float, silently rounding it (2**64 + 1 becomes
1.8446744073709552e+19), and refuses the NaN/Infinity tokens W&B rows carry; `parse_json`
checks the parsed floats and falls back to the standard library for both."""

from __future__ import annotations

import json
from typing import Any

import orjson

from run_pipeline import deep_json

_ROUNDED = 2.0**63


_SCALARS = frozenset((str, int, bool, type(None)))
_CONTAINERS = (dict, list)


def may_be_rounded(value: Any) -> bool:
    """Whether an orjson result holds a float where the text may have had an integer beyond
    orjson's range: orjson reads those as floats of magnitude >= 2**63. A walk of the parsed
    values skips the text inside strings, which on a history page is nearly all of it; a
    container's values are looked at by kind in C first, so a list of strings (a page of
    history rows) or of numbers (a histogram's bins) costs one pass, not one step per value."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not -_ROUNDED < item < _ROUNDED:
                return True
            continue
        if kind is dict:
            values = item.values()
        elif kind is list:
            values = item
        else:
            continue
        kinds = set(map(type, values))
        if kinds <= _SCALARS:
            continue
        if float in kinds and kinds <= {float, int, bool}:
            if not -_ROUNDED < min(values) <= max(values) < _ROUNDED:  # an int that large is exact, but rare
                return True
            continue
        stack.extend(v for v in values if type(v) is float or type(v) in _CONTAINERS)
    return False


def parse_json(data: bytes | str) -> Any:
    """Parse JSON fast with orjson, falling back to the stdlib for what orjson rejects
    (`NaN`/`Infinity` tokens) or may have rounded (integers beyond 64 bits)."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        if not may_be_rounded(value):
            return value
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        # W&B's own SDK retries JSONString payloads with strict=False (control characters).
        return json.loads(data, strict=False)
    except RecursionError:  # nested deeper than the stdlib follows (a deep config)
        return deep_json.loads(data)


def loads_lenient(text: str) -> Any:
    """orjson's reading of one JSON text, the exact parser's for what orjson refuses (NaN and
    Infinity tokens); the caller checks the result for rounded integers (`may_be_rounded`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return parse_json(text)
