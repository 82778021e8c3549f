"""Sparse numeric columns moved into shared buffers of values keep every value and null."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from run_pipeline.shared_values import share_values


@pytest.mark.parametrize("arrow_type,rows", [(pa.float64(), 1000), (pa.int64(), 1003), (pa.float64(), 5)])
def test_shared_values_keep_every_value_and_null(arrow_type, rows):
    rng = random.Random(rows)
    make = (lambda: rng.random()) if arrow_type == pa.float64() else (lambda: rng.randrange(-2**63, 2**63))
    arrays = []
    for k in range(300):
        density = 0.02 if k % 10 else 0.5  # some keys much denser than others
        arrays.append(pa.array([make() if rng.random() < density else None for _ in range(rows)], arrow_type))
    arrays.append(pa.array([make() for _ in range(rows - 1)] + [None], arrow_type))  # one null only
    shared = share_values(arrays)
    assert [a.to_pylist() for a in shared] == [a.to_pylist() for a in arrays]
    assert [a.null_count for a in shared] == [a.null_count for a in arrays]
    assert all(a.type == arrow_type and len(a) == rows for a in shared)
    if rows >= 1000:
        batch = pa.RecordBatch.from_arrays(shared, [str(i) for i in range(len(shared))])
        assert batch.get_total_buffer_size() < sum(a.nbytes for a in arrays) / 3


def test_only_wide_sparse_columns_are_moved_and_shared_buffers_count_once():
    from run_pipeline.shared_values import held_bytes, share_sparse

    rows = 800
    sparse = [pa.array([1.5 if (i + k) % 40 == 0 else None for i in range(rows)]) for k in range(300)]
    dense = [pa.array([float(i) if i % 3 else None for i in range(rows)]) for _ in range(300)]
    text = [pa.array(["x"] + [None] * (rows - 1))] * 300
    moved = share_sparse(sparse)
    assert [a.to_pylist() for a in moved] == [a.to_pylist() for a in sparse]
    assert held_bytes(moved) < held_bytes(sparse) / 10 and held_bytes(sparse) == sum(a.nbytes for a in sparse)
    assert all(a is b for a, b in zip(share_sparse(moved), moved))  # already sharing
    assert all(a is b for a, b in zip(share_sparse(dense), dense))  # two values in three
    assert all(a is b for a, b in zip(share_sparse(sparse[:100]), sparse[:100]))  # few columns
    assert all(a is b for a, b in zip(share_sparse(text), text))  # not numeric
