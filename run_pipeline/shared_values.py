"""Sparse numeric columns laid out to share buffers of values: what lies under a null is never
read, so keys that never hold a value in the same row can keep their values in one buffer (a
"lane"), each with its own validity bitmap. A wide history batch (2,003 keys of 1,000 rows,
50 a row) then holds about as many rows of values as its fullest row has keys: 0.6 MB instead
of 16 MB. Used by the client's wide pages and by the warehouse for wide batches of any source.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: Lanes a key tries (the latest ones) before it opens its own.
LANE_TRIES = 64
#: A batch with at least this many sparse numeric columns of one type has their values moved
#: into shared buffers (`share_sparse`) unless they already share them.
WIDE_COLUMNS = 256


def assign_lanes(bits: np.ndarray) -> tuple[np.ndarray, int]:
    """A lane for each key (a row of `bits`: the rows it holds, as a little-endian bitmap whose
    bits past the last row are clear): the first of the latest `LANE_TRIES` lanes whose keys
    hold no value in the key's rows, or a new one. A page whose keys mostly meet costs at most
    a lane per key, in bounded time."""
    raw, width = bits.tobytes(), bits.shape[1]
    taken: list[int] = []
    lane = np.empty(len(bits), np.int64)
    for k in range(len(bits)):
        rows = int.from_bytes(raw[k * width:(k + 1) * width], "little")
        for j in range(max(0, len(taken) - LANE_TRIES), len(taken)):
            if not taken[j] & rows:
                taken[j] |= rows
                break
        else:
            j = len(taken)
            taken.append(rows)
        lane[k] = j
    return lane, len(taken)


def zeros(shape: tuple[int, int], dtype: type) -> tuple[pa.Buffer, np.ndarray]:
    """A zeroed matrix in a buffer of Arrow's memory pool: the warehouse hands the pool's freed
    memory back to the OS after each row group, where a block of the C heap would stay with the
    process (peak memory creeping up batch after batch)."""
    buffer = pa.allocate_buffer(shape[0] * shape[1] * np.dtype(dtype).itemsize)
    matrix = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    matrix.fill(0)
    return buffer, matrix


def lane_arrays(arrow_type: pa.DataType, n: int, bits: np.ndarray, counts: list[int], lane: np.ndarray,
                value_buffer: pa.Buffer) -> list[pa.Array]:
    """The arrays of `n` rows whose validity is `bits` (one row per array) and whose values lie
    in lanes of `value_buffer` (a matrix of `n` values per lane), `counts` values each."""
    bit_buffer = pa.py_buffer(bits)
    bit_width, width = bits.shape[1], n * arrow_type.byte_width
    return [pa.Array.from_buffers(arrow_type, n,
                                  [None if count == n else bit_buffer.slice(i * bit_width, bit_width),
                                   value_buffer.slice(int(lane[i]) * width, width)],
                                  null_count=n - count)
            for i, count in enumerate(counts)]


_DTYPES = {pa.float64(): np.float64, pa.int64(): np.int64}


def share_values(arrays: list[pa.Array]) -> list[pa.Array]:
    """The same arrays (float64 or int64, all of one type and length, each with nulls and no
    offset), their values moved into shared lanes."""
    arrow_type, n = arrays[0].type, len(arrays[0])
    dtype = _DTYPES[arrow_type]
    width = (n + 7) // 8
    bits = np.empty((len(arrays), width), np.uint8)
    for k, array in enumerate(arrays):
        bits[k] = np.frombuffer(array.buffers()[0], np.uint8, count=width)
    if n % 8:
        bits[:, -1] &= (1 << (n % 8)) - 1  # bits past the last row are undefined in Arrow
    present = np.unpackbits(bits, axis=1, count=n, bitorder="little").view(bool)
    counts = present.sum(axis=1).tolist()
    lane, lanes = assign_lanes(bits)
    value_buffer, matrix = zeros((lanes, n), dtype)
    for k, array in enumerate(arrays):
        rows = present[k]
        matrix[lane[k], rows] = np.frombuffer(array.buffers()[1], dtype, count=n)[rows]
    return lane_arrays(arrow_type, n, bits, counts, lane, value_buffer)


def share_sparse(arrays: list[pa.Array]) -> list[pa.Array]:
    """The columns of one batch, those of a wide, sparse batch (as exported Parquet gives
    them: 2,003 keys of about 1,000 rows, 97.5% null, 16 MB) holding their values in shared
    buffers; the others (few, dense, or already sharing, as the client's wide pages do) as
    they are. Pending rows then cost memory in proportion to their values, not their keys."""
    out = list(arrays)
    by_type: dict[pa.DataType, list[int]] = {}
    for i, array in enumerate(arrays):
        if array.type in _DTYPES and array.null_count and not array.offset:
            by_type.setdefault(array.type, []).append(i)
    for indices in by_type.values():
        group = [arrays[i] for i in indices]
        n = len(group[0])
        if (len(group) < WIDE_COLUMNS or sum(n - a.null_count for a in group) * 4 > len(group) * n
                or len({a.buffers()[1].address // (n * 8) for a in group}) < len(group) // 2):
            continue
        for i, array in zip(indices, share_values(group)):
            out[i] = array
    return out


def held_bytes(arrays: list[pa.Array]) -> int:
    """Bytes of the arrays' buffers, a buffer shared by several arrays counted once (2,000
    columns of 1,000 rows sharing their values hold 0.6 MB, not the 16 MB their lengths add
    up to); never more than their `nbytes`."""
    total = sum(a.nbytes for a in arrays)
    distinct: dict[tuple[int, int], None] = {}
    for a in arrays:
        for buffer in a.buffers():
            if buffer is not None:
                distinct[buffer.address, buffer.size] = None
    return min(total, sum(size for _, size in distinct))
