"""`iter_history_batches` / `iter_system_metrics_batches` against the emulator: equal to the
dataset's history.jsonl (values, NaN, row counts) from exported Parquet and from live pages."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from run_pipeline.client import batch_to_rows, is_json_field

from .conftest import norm, wait_for_parquet


def batches_rows(batches) -> list[dict]:
    rows = []
    for batch in batches:
        assert batch.schema.names[0] == "_step"
        assert batch.schema.field("_step").type == pa.int64()
        rows.extend(batch_to_rows(batch))
    return rows


@pytest.mark.parametrize("mode", ["parquet", "live", "auto"])
def test_batches_equal_dataset_history(api, dataset, emulator, mode):
    emulator.set_parquet_mode(mode)
    total = 0
    for d in dataset:
        expected = d.history()
        got = batches_rows(api.run(d.path).iter_history_batches(page_size=200))
        assert len(got) == len(expected), d.path
        assert norm(got) == norm(expected), d.path
        total += len(got)
    assert total == sum(len(d.history()) for d in dataset)


def test_parquet_mode_really_reads_parquet(api, dataset, emulator):
    emulator.set_parquet_mode("parquet")
    d = next(d for d in dataset if "examples" not in (d.dir / "history.jsonl").read_text())
    run = api.run(d.path)
    wait_for_parquet(run)
    urls = run._history().parquet_history()
    assert len(urls) == 1
    before = api._transport.stats["requests"]
    rows = batches_rows(run.iter_history_batches(page_size=10))
    # parquetHistory + download + lastStep lookup for the (empty) tail: no page per 10 steps.
    assert api._transport.stats["requests"] - before <= 4
    assert norm(rows) == norm(d.history())


def test_nan_and_infinity_stay_floats(api, showcase):
    rows = showcase.history()
    bad = [r for r in rows
           if any(isinstance(v, float) and not math.isfinite(v) for v in r.values())]
    assert bad, "the showcase run carries NaN/Infinity"
    for mode_rows in (batches_rows(api.run(showcase.path).iter_history_batches()),):
        by_step = {r["_step"]: r for r in mode_rows}
        for r in bad:
            for k, v in r.items():
                if isinstance(v, float) and math.isnan(v):
                    assert math.isnan(by_step[r["_step"]][k])
                elif isinstance(v, float) and math.isinf(v):
                    assert by_step[r["_step"]][k] == v


def test_media_dicts_are_recoverable_json(api, showcase):
    batches = list(api.run(showcase.path).iter_history_batches())
    fields = [b.schema.field("examples") for b in batches if "examples" in b.schema.names]
    assert fields and all(is_json_field(f) and f.type == pa.string() for f in fields)
    media = [r["examples"] for r in showcase.history() if "examples" in r]
    got = [r["examples"] for r in batches_rows(batches) if "examples" in r]
    assert got == media and isinstance(got[0], dict)


@pytest.mark.parametrize("mode", ["parquet", "live"])
def test_min_and_max_step(api, showcase, emulator, mode):
    emulator.set_parquet_mode(mode)
    rows = showcase.history()
    run = api.run(showcase.path)
    cut = rows[len(rows) // 3]["_step"]
    top = rows[2 * len(rows) // 3]["_step"]
    got = batches_rows(run.iter_history_batches(min_step=cut, page_size=50))
    assert norm(got) == norm([r for r in rows if r["_step"] >= cut])
    got = batches_rows(run.iter_history_batches(min_step=cut, max_step=top, page_size=50))
    assert norm(got) == norm([r for r in rows if cut <= r["_step"] < top])
    assert list(run.iter_history_batches(min_step=rows[-1]["_step"] + 1)) == []


def test_late_start_needs_few_requests(api, late_start, emulator):
    emulator.set_parquet_mode("live")
    rows = late_start.history()
    run = api.run(late_start.path)
    before = api._transport.stats["requests"]
    got = batches_rows(run.iter_history_batches(page_size=100))
    assert norm(got) == norm(rows)
    # Steps 0..61009 are empty: growing windows cross them in a handful of requests.
    assert api._transport.stats["requests"] - before < 40


def test_incremental_export_sees_appended_rows(api, dataset, emulator):
    d = next(d for d in dataset if d.meta["state"] == "finished"
             and "examples" not in (d.dir / "history.jsonl").read_text())
    run = api.run(d.path)
    first = batches_rows(run.iter_history_batches())
    last = first[-1]["_step"]
    new = [{"_step": last + 1, "_runtime": 1.0, "train/loss": 0.1},
           {"_step": last + 5, "_runtime": 2.0, "train/loss": float("nan")}]
    emulator.store.append_history(d.entity, d.project, d.run_id, new)
    delta = batches_rows(run.iter_history_batches(min_step=last + 1))
    assert norm(delta) == norm(new)
    assert len(batches_rows(run.iter_history_batches())) == len(first) + 2


def test_live_values_keep_their_meaning(api, dataset, emulator):
    d = next(d for d in dataset if d.meta["state"] == "running")
    last = d.history()[-1]["_step"]
    s = last + 1
    new = [
        {"_step": s, "big": 2**63 - 1, "exact": 2**53 + 1, "huge": 2**70, "mixed": 1,
         "flag": True, "text": "a", "lst": [1, 2], "obj": {"a": {"b": None}}, "f": float("inf")},
        {"_step": s + 1, "big": 5, "exact": 7, "huge": 1, "mixed": "one", "flag": False,
         "text": "b", "f": float("nan")},
        {"_step": s + 1, "big": 6, "dup": True},  # a repeated step is kept, not merged
        {"_step": s + 9, "big": 7},
    ]
    emulator.store.append_history(d.entity, d.project, d.run_id, new)
    batches = list(api.run(d.path).iter_history_batches(min_step=s))
    assert len(batches) == 1 and batches[0].num_rows == 4
    batch = batches[0]
    types = {f.name: f.type for f in batch.schema}
    assert types["big"] == pa.int64() and types["exact"] == pa.int64()
    assert types["flag"] == pa.bool_() and types["text"] == pa.string()
    assert types["f"] == pa.float64() and types["dup"] == pa.bool_()
    for name in ("huge", "mixed", "lst", "obj"):
        assert is_json_field(batch.schema.field(name)), name
    rows = batches_rows(batches)
    assert rows[0]["big"] == 2**63 - 1 and rows[0]["exact"] == 2**53 + 1
    assert rows[0]["huge"] == 2**70 and rows[1]["mixed"] == "one" and rows[0]["mixed"] == 1
    assert rows[0]["obj"] == {"a": {"b": None}} and rows[0]["lst"] == [1, 2]
    assert rows[0]["f"] == math.inf and math.isnan(rows[1]["f"])
    assert [r["_step"] for r in rows] == [s, s + 1, s + 1, s + 9] and rows[2]["dup"] is True


def test_system_metrics_full_stream(api, dataset, emulator):
    d = max(dataset, key=lambda d: len(d.system()))
    extra = [{"_timestamp": 2e9 + i, "_runtime": 1e5 + i, "system.cpu": float(i % 100)}
             for i in range(800)]
    emulator.store.append_system(d.entity, d.project, d.run_id, extra)
    expected = d.system()
    assert len(expected) > 500  # more than W&B's default 500-row sample
    batches = list(api.run(d.path).iter_system_metrics_batches(batch_rows=300))
    rows = [r for b in batches for r in batch_to_rows(b)]
    assert len(rows) == len(expected)
    assert norm(rows) == norm(expected)
    assert batches[0].schema.names[0] == "_timestamp"
    assert max(b.num_rows for b in batches) <= 300
