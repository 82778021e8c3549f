"""W&B's MongoDB-style run filters and `order` strings, evaluated over run records.

A run is seen through `field_value(run, path)`; `path` is a run column (snake or camel case),
`config.<key>[.value]` or `summary_metrics.<key>`.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timezone
from typing import Any, Callable

MISSING = object()


class FilterError(ValueError):
    """The filter or order expression is malformed; the message says where."""


_COLUMN_ALIASES = {
    "display_name": "displayName",
    "created_at": "createdAt",
    "heartbeat_at": "heartbeatAt",
    "updated_at": "updatedAt",
    "job_type": "jobType",
    "sweep_name": "sweepName",
    "run_id": "name",
}
_DATE_COLUMNS = {"createdAt", "heartbeatAt", "updatedAt"}


def canonical_column(path: str) -> str:
    return _COLUMN_ALIASES.get(path, path)


def _lookup_nested(obj: Any, key: str) -> Any:
    """Resolve `key` in a nested dict: the whole key first (keys may contain dots), then by parts."""
    if not isinstance(obj, dict):
        return MISSING
    if key in obj:
        return obj[key]
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in obj:
            found = _lookup_nested(obj[head], ".".join(parts[i:]))
            if found is not MISSING:
                return found
    return MISSING


def field_value(run: Any, path: str) -> Any:
    """The value at `path` for a run, or MISSING. `run` offers .column(name), .config, .summary."""
    if path.startswith("config."):
        key = path[len("config."):]
        v = _lookup_nested(run.config, key)
        if v is MISSING and key.endswith(".value"):
            v = _lookup_nested(run.config, key[: -len(".value")])
        return v
    for prefix in ("summary_metrics.", "summaryMetrics.", "summary."):
        if path.startswith(prefix):
            return _lookup_nested(run.summary, path[len(prefix):])
    return run.column(canonical_column(path))


def _as_time(v: Any) -> Any:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return v
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return v


def _rank(v: Any) -> int:
    if v is None or v is MISSING:
        return 0
    if isinstance(v, bool):
        return 3
    if isinstance(v, (int, float)):
        return 1
    if isinstance(v, str):
        return 2
    if isinstance(v, datetime):
        return 4
    return 5


def _comparable(a: Any, b: Any) -> bool:
    return _rank(a) == _rank(b) and _rank(a) in (1, 2, 3, 4)


def _eq(a: Any, b: Any) -> bool:
    if a is MISSING:
        return b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _cmp_op(op: str) -> Callable[[Any, Any], bool]:
    import operator

    fn = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}[op]

    def check(a: Any, b: Any) -> bool:
        return a is not MISSING and _comparable(a, b) and fn(a, b)

    return check


def _match_value(actual: Any, cond: Any, is_list: bool, where: str) -> bool:
    """Does `actual` satisfy `cond` (a literal or a dict of $-operators)?"""
    if _is_operators(cond):
        return all(_match_op(actual, op, arg, is_list, where) for op, arg in cond.items())
    return _match_op(actual, "$eq", cond, is_list, where)


def _is_operators(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(isinstance(k, str) and k.startswith("$") for k in cond)


def _match_op(actual: Any, op: str, arg: Any, is_list: bool, where: str) -> bool:
    if is_list:
        items = actual if isinstance(actual, list) else []
        if op == "$eq":
            return any(_eq(x, arg) for x in items) or (isinstance(arg, list) and items == arg)
        if op == "$ne":
            return not any(_eq(x, arg) for x in items)
        if op == "$in":
            _need_list(arg, op, where)
            return any(_eq(x, a) for x in items for a in arg)
        if op == "$nin":
            _need_list(arg, op, where)
            return not any(_eq(x, a) for x in items for a in arg)
        if op == "$exists":
            return bool(arg) == (actual is not MISSING)
        if op == "$regex":
            rx = _regex(arg, where)
            return any(isinstance(x, str) and rx.search(x) for x in items)
        if op in ("$gt", "$gte", "$lt", "$lte"):
            check = _cmp_op(op)
            return any(check(x, arg) for x in items)
        raise FilterError(f"unknown operator {op!r} at {where}")
    if op == "$eq":
        return _eq(actual, arg)
    if op == "$ne":
        return not _eq(actual, arg)
    if op == "$in":
        _need_list(arg, op, where)
        return any(_eq(actual, a) for a in arg)
    if op == "$nin":
        _need_list(arg, op, where)
        return not any(_eq(actual, a) for a in arg)
    if op == "$exists":
        return bool(arg) == (actual is not MISSING and actual is not None)
    if op == "$regex":
        rx = _regex(arg, where)
        return isinstance(actual, str) and rx.search(actual) is not None
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _cmp_op(op)(actual, arg)
    if op == "$options":
        return True
    raise FilterError(f"unknown operator {op!r} at {where}")


def _need_list(arg: Any, op: str, where: str) -> None:
    if not isinstance(arg, list):
        raise FilterError(f"{op} at {where} needs a list, got {type(arg).__name__}")


@functools.lru_cache(maxsize=256)
def _regex_cached(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _regex(arg: Any, where: str) -> re.Pattern:
    if not isinstance(arg, str):
        raise FilterError(f"$regex at {where} needs a string")
    try:
        return _regex_cached(arg)
    except re.error as exc:
        raise FilterError(f"bad $regex {arg!r} at {where}: {exc}") from exc


def validate(flt: Any, where: str = "filters") -> None:
    """Raise FilterError for any malformed part of `flt`, whatever runs it would meet
    (evaluation short-circuits, so it alone would let a bad clause pass unnoticed)."""
    if flt is None or flt == {}:
        return
    if not isinstance(flt, dict):
        raise FilterError(f"{where} must be a JSON object, got {type(flt).__name__}")
    for key, cond in flt.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(cond, list):
                raise FilterError(f"{key} at {where} needs a list")
            for i, c in enumerate(cond):
                validate(c, f"{where}.{key}[{i}]")
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at {where}")
        elif _is_operators(cond):
            for op, arg in cond.items():
                _match_op(MISSING, op, arg, False, f"{where}.{key}")


def matches(run: Any, flt: Any) -> bool:
    """Evaluate a parsed filter document against one run; FilterError if it is malformed."""
    validate(flt)
    return _matches(run, flt, "filters")


def _matches(run: Any, flt: Any, where: str) -> bool:
    """Evaluate a filter that `validate` accepted."""
    if not flt:
        return True
    for key, cond in flt.items():
        if key in ("$and", "$or", "$nor"):
            results = (_matches(run, c, f"{where}.{key}[{i}]") for i, c in enumerate(cond))
            if key == "$and" and not all(results):
                return False
            if key == "$or" and not any(results):
                return False
            if key == "$nor" and any(results):
                return False
            continue
        column = canonical_column(key)
        actual = field_value(run, key)
        if column in _DATE_COLUMNS:
            actual = _as_time(actual)
            cond = _map_times(cond)
        if not _match_value(actual, cond, column == "tags", f"{where}.{key}"):
            return False
    return True


def _map_times(cond: Any) -> Any:
    if isinstance(cond, dict):
        return {k: _map_times(v) for k, v in cond.items()}
    if isinstance(cond, list):
        return [_map_times(v) for v in cond]
    return _as_time(cond)


def parse_order(order: str | None) -> tuple[str, bool]:
    """`[+|-]path` → (path, descending). No sign means ascending."""
    order = (order or "+created_at").strip()
    if not order:
        order = "+created_at"
    desc = order.startswith("-")
    path = order[1:] if order[:1] in "+-" else order
    if not path:
        raise FilterError(f"order {order!r} names no field")
    return path, desc


def sort_key(run: Any, path: str) -> tuple:
    """(missing, rank, value): missing values sort last whatever the direction."""
    v = field_value(run, path)
    if canonical_column(path) in _DATE_COLUMNS:
        v = _as_time(v)
    if v is MISSING or v is None or (isinstance(v, float) and math.isnan(v)):
        # NaN is unordered (NaN != NaN would make the sort and the cursors unstable): it goes with missing.
        return (1, 0, 0)
    r = _rank(v)
    if r == 5:
        return (0, r, repr(v))
    return (0, r, v)


def compare(a: tuple, b: tuple, desc: bool) -> int:
    """Compare two (sort_key, storage_id) entries under the requested direction."""
    (ma, ra, va), ida = a
    (mb, rb, vb), idb = b
    if ma != mb:
        return -1 if ma < mb else 1
    if ra != rb:
        c = -1 if ra < rb else 1
        return -c if desc else c
    if va != vb:
        c = -1 if va < vb else 1
        return -c if desc else c
    if ida != idb:
        return -1 if ida < idb else 1
    return 0
