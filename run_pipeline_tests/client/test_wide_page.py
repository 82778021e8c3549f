"""Pages of many sparse keys (`client/wide_page.py`) give the batch every other way of reading
them gives: the exact path (`rows_to_batch` of exactly parsed rows) column for column, in the
same order, and pyarrow.json's path value for value."""

from __future__ import annotations

import json
import math
import random

import pyarrow as pa
import pytest

from run_pipeline.client import batch_to_rows, batches, is_json_field
from run_pipeline.client.batches import rows_to_batch, strings_to_batch
from run_pipeline.client.codec import parse_json
from run_pipeline.client.wide_page import looks_wide, wide_batch
from run_pipeline.emulator.messy import generate_shaped_run
from run_pipeline_tests.client.test_unit import PAGES


def _same(a: pa.RecordBatch, b: pa.RecordBatch) -> None:
    assert a.schema.equals(b.schema, check_metadata=True), (a.schema, b.schema)
    assert a.equals(b) or json.dumps(a.to_pylist()) == json.dumps(b.to_pylist())


def _exact(page: list[str]) -> pa.RecordBatch:
    return rows_to_batch([parse_json(s) for s in page])


def _pyarrow_path(page: list[str], monkeypatch) -> pa.RecordBatch:
    with monkeypatch.context() as m:
        m.setattr(batches, "looks_wide", lambda strings: False)
        return strings_to_batch(page)


@pytest.mark.parametrize("page", PAGES)
def test_every_value_shape_typed_as_the_exact_path_types_it(page):
    _same(wide_batch(page, ("_step",)), _exact(page))


def _sparse_page(rows: int = 600, keys: int = 900, per_row: int = 40, seed: int = 0) -> list[str]:
    """Rows of `per_row` of `keys` keys, most numbers, a few of every other shape."""
    rng = random.Random(seed)
    names = [f"layers/{i:03d}/grad_norm" for i in range(keys)]
    special = {
        names[0]: lambda i: i,                                  # ints
        names[1]: lambda i: [1.5, float("nan"), math.inf, -math.inf][i % 4],
        names[2]: lambda i: "warmup" if i % 2 else "train",
        names[3]: lambda i: i % 3 == 0,
        names[4]: lambda i: {"_type": "histogram", "bins": [0, 1], "values": [i]},
        names[5]: lambda i: 2**64 + i if i % 5 == 0 else 1.5,  # beyond int64 among floats
        names[6]: lambda i: 200 if i % 2 else "n/a",            # mixed kinds
        names[7]: lambda i: None if i % 2 else 0.5,             # JSON null
        names[8]: lambda i: 2**62 + i,                          # int64, beyond 2**53
        names[9]: lambda i: 3 if i % 2 else 0.25,               # int and float
    }
    out = []
    for i in range(rows):
        row = {"_step": i, "_runtime": i * 0.5}
        for name in rng.sample(names, per_row) + names[:10]:
            row[name] = special[name](i) if name in special else round(rng.random(), 5)
        out.append(json.dumps(row))
    return out


def test_a_sparse_page_of_every_shape_matches_the_exact_path_and_pyarrow_json(monkeypatch):
    page = _sparse_page()
    assert looks_wide(page)
    wide = wide_batch(page, ("_step",))
    _same(wide, _exact(page))
    fast = _pyarrow_path(page, monkeypatch)
    names = sorted(fast.schema.names)  # pyarrow.json orders columns by its parse blocks
    _same(wide.select(names), fast.select(names))
    assert is_json_field(wide.schema.field("layers/005/grad_norm"))
    assert batch_to_rows(wide.slice(0, 1))[0]["layers/005/grad_norm"] == 2**64


def test_the_generated_wide_run_reads_alike_every_way(tmp_path, monkeypatch):
    generate_shaped_run(tmp_path / "wide0001", shape="wide", steps=1200, seed=3)
    lines = (tmp_path / "wide0001" / "history.jsonl").read_text().splitlines()
    for page in (lines[:1000], lines[1000:]):
        assert looks_wide(page)
        batch = strings_to_batch(page)
        _same(batch, _exact(page))
        fast = _pyarrow_path(page, monkeypatch)
        names = sorted(fast.schema.names)
        _same(batch.select(names), fast.select(names))
        assert batch.num_columns == 2003 and batch.num_rows == len(page)


@pytest.mark.parametrize("shape", ["messy", "dense"])
def test_ordinary_pages_stay_with_pyarrow_json(tmp_path, shape):
    if shape == "messy":
        generate_shaped_run(tmp_path / "messy001", shape="messy", steps=2000, seed=1)
        page = (tmp_path / "messy001" / "history.jsonl").read_text().splitlines()[:1000]
    else:  # 600 keys in every row: many keys, not sparse
        page = [json.dumps({"_step": i, **{f"k{j}": i + j / 7 for j in range(600)}}) for i in range(50)]
    assert not looks_wide(page)


def test_a_wide_page_holds_about_one_row_of_values_per_key_of_its_fullest_row(tmp_path):
    generate_shaped_run(tmp_path / "wide0001", shape="wide", steps=1000, seed=3)
    page = (tmp_path / "wide0001" / "history.jsonl").read_text().splitlines()
    batch = wide_batch(page, ("_step",))
    # Keys that never share a row share a buffer of values: 53 lanes of 1,000 values and a
    # validity bitmap per key, instead of 2,003 columns of 1,000 values (16 MB).
    assert batch.get_total_buffer_size() < 60 * 1000 * 8 + 2003 * 1000 // 8 + 8 * 1000
    assert batch.nbytes > 15 * 2**20


def test_a_wide_run_of_several_pages_lands_alike_live_and_from_exported_parquet(tmp_path):
    from run_pipeline.client import Api
    from run_pipeline.discovery import discover_runs
    from run_pipeline.emulator.server import EmulatorServer
    from run_pipeline.pool import export_runs
    from run_pipeline.warehouse import Warehouse
    from run_pipeline_tests.reliability.digest import (
        explain_difference,
        warehouse_digest,
    )

    key = "wide" + "0" * 36
    generate_shaped_run(tmp_path / "data" / "e" / "wide" / "wide0001", shape="wide", steps=2_500, seed=2)
    server = EmulatorServer(tmp_path / "data", api_key=key, parquet_mode="live")
    server.start()
    try:
        for mode in ("live", "parquet"):
            server.set_parquet_mode(mode)
            warehouse = Warehouse(tmp_path / mode)
            with Api(api_key=key, base_url=server.base_url) as api:
                outcomes = list(export_runs(api, warehouse, discover_runs(api, "e", "wide"), workers=1))
            assert [o.result.history_rows_written for o in outcomes] == [2_500]
            warehouse.refresh_catalog()
    finally:
        server.stop()
    a, b = warehouse_digest(tmp_path / "live"), warehouse_digest(tmp_path / "parquet")
    assert a == b, explain_difference(tmp_path / "live", tmp_path / "parquet")
