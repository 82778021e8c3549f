"""A run of every real-world value shape (`sample-data --messy`), exported from the emulator's
Parquet history (W&B's export types: structs, lists, `_type_<kind>` unions) and from live
pages, lands as the same warehouse content; and the emulator's Parquet file holds the column
types the W&B SDK's reader of exported history expects."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from run_pipeline.client import Api
from run_pipeline.discovery import discover_runs
from run_pipeline.emulator.messy import generate_shaped_run
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.pool import export_runs
from run_pipeline.warehouse import Warehouse
from run_pipeline_tests.reliability.digest import explain_difference, warehouse_digest

API_KEY = "messy" + "0" * 35
STEPS = 3_000


@pytest.fixture(scope="module")
def messy_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy-dataset")
    generate_shaped_run(root / "e" / "messy" / "messrun1", shape="messy", steps=STEPS, seed=1)
    generate_shaped_run(root / "e" / "wide" / "widerun1", shape="wide", steps=200, seed=1)
    server = EmulatorServer(root, api_key=API_KEY, parquet_mode="live")
    server.start()
    yield server
    server.stop()


def _export(server, mode: str, out) -> list:
    server.set_parquet_mode(mode)
    warehouse = Warehouse(out)
    with Api(api_key=API_KEY, base_url=server.base_url) as api:
        found = [f for p in ("messy", "wide") for f in discover_runs(api, "e", p)]
        outcomes = list(export_runs(api, warehouse, found, workers=1))
    warehouse.refresh_catalog()
    return [o.result for o in outcomes]


def test_messy_run_parquet_and_live_exports_are_identical(messy_server, tmp_path):
    live = _export(messy_server, "live", tmp_path / "live")
    parquet = _export(messy_server, "parquet", tmp_path / "parquet")
    store = messy_server.store
    assert all(store.served_from_parquet(store.require_run("e", p, r))
               for p, r in (("messy", "messrun1"), ("wide", "widerun1")))
    assert {r.history_rows_written for r in live if "messy" in r.key.path} == {STEPS}
    assert {r.history_rows_written for r in parquet if "messy" in r.key.path} == {STEPS}
    a, b = warehouse_digest(tmp_path / "live"), warehouse_digest(tmp_path / "parquet")
    assert a == b, explain_difference(tmp_path / "live", tmp_path / "parquet")


def test_messy_parquet_export_has_the_sdk_readers_types(messy_server):
    store = messy_server.store
    run = store.require_run("e", "messy", "messrun1")
    messy_server.set_parquet_mode("auto")
    assert store.served_from_parquet(run)
    schema = pq.read_schema(store.parquet_export(run))
    assert schema.field("_step").type == pa.int64()
    assert schema.field("global_tokens").type == pa.int64()
    assert schema.field("topk").type == pa.list_(pa.int64())
    assert schema.field("status_code").type == pa.struct([("_type_number", pa.int64()),
                                                          ("_type_string", pa.string())])
    weights = schema.field("weights").type
    assert [weights.field(i).name for i in range(weights.num_fields)] == ["_type", "bins", "values"]
    assert weights.field("bins").type == pa.list_(pa.float64())
    assert schema.field("examples").type.field("sha256").type == pa.string()
    assert schema.field("optimizer").type.field("betas").type == pa.struct([("b1", pa.float64()),
                                                                           ("b2", pa.float64())])
    readable = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_boolean,
                pa.types.is_list, pa.types.is_struct)
    assert all(any(ok(f.type) for ok in readable) for f in schema), schema


def test_json_text_the_client_writes_is_stored_canonical(messy_server, tmp_path):
    # The warehouse stores client JSON text as it is when the batch says it is canonical:
    # it must equal what the warehouse's own canonical form would be.
    from run_pipeline.warehouse.schema import JSON_FIELD_KEY, canonical_json

    _export(messy_server, "live", tmp_path / "live")
    checked = 0
    for path in (tmp_path / "live" / "history").rglob("*.parquet"):
        table = pq.read_table(path)
        for field in table.schema:
            if field.metadata and field.metadata.get(JSON_FIELD_KEY) == b"1":
                values = [v for v in table.column(field.name).to_pylist() if v is not None]
                assert values == [canonical_json(v) for v in values], field.name
                checked += len(values)
    assert checked > 500


def test_exported_structs_unions_and_lists_read_back_as_logged():
    from run_pipeline.client import batch_to_rows
    from run_pipeline.client.batches import normalize_batch

    media = pa.array([{"_type": "image-file", "sha256": "ab" * 32, "size": 3}, None,
                      {"_type": "image-file", "sha256": "cd" * 32, "size": None}],
                     pa.struct([("_type", pa.string()), ("sha256", pa.string()), ("size", pa.int64())]))
    mixed = pa.array([{"_type_number": 200}, {"_type_string": "n/a"}, None],
                     pa.struct([("_type_number", pa.int64()), ("_type_string", pa.string())]))
    nested = pa.array([[{"a": 1.5}], [], None], pa.list_(pa.struct([("a", pa.float64())])))
    batch = pa.RecordBatch.from_arrays([pa.array([0, 1, 2]), media, mixed, nested],
                                       ["_step", "examples", "status_code", "nested"])
    rows = batch_to_rows(normalize_batch(batch))
    assert rows == [
        {"_step": 0, "examples": {"_type": "image-file", "sha256": "ab" * 32, "size": 3}, "status_code": 200,
         "nested": [{"a": 1.5}]},
        {"_step": 1, "status_code": "n/a", "nested": []},
        {"_step": 2, "examples": {"_type": "image-file", "sha256": "cd" * 32}},
    ]


def test_live_page_with_mixed_keys_matches_the_exact_path():
    # Keys of mixed kinds (plain, quoted, unicode), NaN rows, a huge int inside a dict, hex
    # digests: the per-column path gives what parsing every row exactly gives.
    from run_pipeline.client.batches import parse_rows, rows_to_batch, strings_to_batch

    page = []
    for i in range(300):
        row = {"_step": i, "loss": i / 7, "status_code": "n/a" if i % 50 == 0 else 200,
               'say "hi"': True if i % 3 == 0 else 1.5, "métrica": [i] if i % 7 == 0 else "x",
               "sha": "%064x" % (i * 10**30)}
        if i % 40 == 0:
            row["img"] = {"_type": "image-file", "sha256": "%064d" % i, "n": 2**64 + i}
        page.append(json.dumps(row, ensure_ascii=i % 2 == 0))
    page[5] = page[5].replace('"loss": 0.7142857142857143', '"loss": NaN')
    fast = strings_to_batch(page)
    exact = rows_to_batch(parse_rows(page))
    assert fast.schema.names == exact.schema.names
    assert fast.to_pylist() == exact.to_pylist() or str(fast.to_pylist()) == str(exact.to_pylist())
    assert [fast.schema.field(n).metadata for n in fast.schema.names] == \
        [exact.schema.field(n).metadata for n in exact.schema.names]
