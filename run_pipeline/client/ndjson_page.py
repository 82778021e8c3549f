"""Reading one page of history rows with pyarrow.json (C++), for `batches.strings_to_batch`:
keys of mixed kinds are split by kind so the rest of the page still reads, and float columns
that may hold integers beyond int64 are found from the parsed values."""

from __future__ import annotations

import io
import json
import re

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json


def huge_float_columns(table: pa.Table) -> set[str]:
    """Float columns that may hold an integer beyond int64: pyarrow.json reads one into a
    double >= 2**63 in magnitude, and such a column must be rebuilt exactly (a real float that
    large only costs speed). Decided from the parsed values: all the page's float columns are
    checked at once, as one chunked array (no copy), and only when that finds a large value
    is each column checked."""
    floats = [name for name, t in zip(table.column_names, table.schema.types) if t == pa.float64()]
    if not floats or not _has_huge(pa.chunked_array(
            [c for name in floats for c in table.column(name).chunks], pa.float64())):
        return set()
    return {name for name in floats if _has_huge(table.column(name))}


def _has_huge(values: pa.ChunkedArray) -> bool:
    bounds = pc.min_max(values)  # NaN-blind
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (-(2.0**63) < low and high < 2.0**63):
        return False
    finite = pc.filter(values, pc.is_finite(values))  # ±Infinity is a float, not a huge int
    return len(finite) > 0 and pc.max(pc.abs(finite)).as_py() >= 2.0**63


def _float_leaves(array) -> list:
    """The floats at the leaves of a (chunked) nested array, as float64 arrays; a struct's
    children and a list's values are reached without copying."""
    if isinstance(array, pa.ChunkedArray):
        return [leaf for chunk in array.chunks for leaf in _float_leaves(chunk)]
    t = array.type
    if t == pa.float64():
        return [array]
    if pa.types.is_floating(t):
        return [pc.cast(array, pa.float64())]
    if pa.types.is_dictionary(t):
        return _float_leaves(array.dictionary)
    if pa.types.is_struct(t):
        return [leaf for child in array.flatten() for leaf in _float_leaves(child)]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _float_leaves(array.flatten())
    if pa.types.is_map(t):
        return _float_leaves(array.items)
    return []


def float_leaf_kinds(columns) -> tuple[bool, bool]:
    """For nested columns as pyarrow.json read them: whether some float inside may be an
    integer beyond int64 (pyarrow.json reads one as a double >= 2**63 in magnitude), and
    whether every float inside is finite and 0 or within [1e-4, 1e16), where orjson writes the
    same text as the standard library (outside it orjson writes 1e-5 as 0.00001 and NaN as null)."""
    leaves = [leaf for column in columns for leaf in _float_leaves(column)]
    if not leaves:
        return False, True
    values = pa.chunked_array(leaves, pa.float64())
    magnitude = pc.abs(values)
    bounds = pc.min_max(magnitude)  # NaN-blind
    high = bounds["max"].as_py()
    if high is None:  # all null (or all NaN)
        return False, values.null_count == len(values)
    finite = pc.all(pc.is_finite(values)).as_py() is not False
    huge = not finite or high >= 2.0**63
    plain = finite and high < 1e16 and not pc.any(
        pc.and_(pc.greater(magnitude, 0.0), pc.less(magnitude, 1e-4))).as_py()
    return huge, plain


_CONFLICT = re.compile(r"Column\((/.*)\) changed from ")
#: A key's value kind by the first character after its colon, for the keys split by kind.
_KIND_SUFFIX = {ord('"'): b"s", ord("t"): b"b", ord("f"): b"b", ord("{"): b"o", ord("["): b"a"}
SPLIT = "\x00"
#: Keys split at most this many times per page before the page takes the exact path whole.
MAXSPLIT_KEYS = 8


def _split_key(data: bytes, key: str) -> bytes | None:
    """`data` with every occurrence of `key` whose value is a string, bool, object or array
    renamed `key\\u0000<kind>`: a key of mixed kinds becomes one column per kind for
    pyarrow.json, and the key itself is then rebuilt exactly from the parsed rows. A key is
    always preceded by `{` or `,` in JSON text, which no string content can spell. Compact
    text (as W&B and the emulator send) is rewritten in one pass over the page; other spacing
    with a regular expression. None when nothing was renamed."""
    for encoded in dict.fromkeys((orjson.dumps(key), json.dumps(key).encode())):
        head = encoded[:-1] + b"\\u0000"
        pieces = data.split(encoded + b":")
        if len(pieces) > 1:
            out, renamed = [pieces[0]], False
            for before, piece in zip(pieces, pieces[1:]):
                kind = _KIND_SUFFIX.get(piece[0]) if piece else None
                if kind is not None and before[-1:] in (b",", b"{"):
                    out.append(head + kind + b'":')
                    renamed = True
                else:
                    out.append(encoded + b":")
                out.append(piece)
            return b"".join(out) if renamed else None
        pattern = re.compile(rb"([{,]\s*)" + re.escape(encoded) + rb"(\s*:\s*)([\"tf{\[])")
        out, n = pattern.subn(lambda m: m[1] + head + _KIND_SUFFIX[m[3][0]] + b'"' + m[2] + m[3], data)
        if n:
            return out
    return None


_BLOCK_SIZE = 1 << 20
#: A page of one block is parsed on the calling thread: handing it to pyarrow's thread pool
#: and waiting for it costs more than it saves, and more still when export worker processes
#: already keep every core busy. Larger pages are parsed a block per thread.
_ONE_BLOCK = pa_json.ReadOptions(block_size=_BLOCK_SIZE, use_threads=False)
_BLOCKS = pa_json.ReadOptions(block_size=_BLOCK_SIZE)

#: Keys met with values of several kinds on recent pages; later pages split them up front, so
#: pyarrow.json reads them once instead of failing first (splitting a key that is not mixed on
#: a page only costs rebuilding it exactly from the few rows that hold it).
_MIXED_KEYS: dict[str, None] = {}
MIXED_KEYS_KEPT = 32


def read_page(data: bytes) -> tuple[pa.Table, list[str]] | None:
    """The page as pyarrow.json reads it, with the keys of mixed kinds split by kind (returned
    in the order split); None when pyarrow.json cannot read it even so."""
    split: list[str] = []
    for key in list(_MIXED_KEYS):
        renamed = _split_key(data, key)
        if renamed is not None:
            data = renamed
            split.append(key)
    for _ in range(MAXSPLIT_KEYS + 1):
        try:
            options = _ONE_BLOCK if len(data) <= _BLOCK_SIZE else _BLOCKS
            table = pa_json.read_json(io.BytesIO(data), read_options=options)
            return table, split
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            found = _CONFLICT.search(str(exc))
            if found is None or len(split) >= MAXSPLIT_KEYS:
                return None
            path = found[1][1:]
            for key in dict.fromkeys((path, path.split("/")[0])):
                if key in split or SPLIT in key:
                    continue
                renamed = _split_key(data, key)
                if renamed is not None:
                    data = renamed
                    split.append(key)
                    _MIXED_KEYS[key] = None
                    while len(_MIXED_KEYS) > MIXED_KEYS_KEPT:
                        del _MIXED_KEYS[next(iter(_MIXED_KEYS))]
                    break
            else:
                return None
    return None
