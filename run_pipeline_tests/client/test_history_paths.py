"""Export paths the emulator never takes (it serves a run wholly from Parquet or wholly live):
Parquet plus a live tail that overlaps it, and a system-metric count that does not match.
A fake transport answers the same GraphQL documents the real server gets."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from run_pipeline.client import (
    Run,
    WandbIncompleteDataError,
    WandbQueryError,
    batch_to_rows,
    history,
    queries,
)


class FakeTransport:
    def __init__(self, tmp_path, parquet_steps, live_steps, events, events_count, *, counts=True):
        self.parquet = tmp_path / "export.parquet"
        table = pa.table({
            "_step": pa.array(parquet_steps, pa.int64()),
            "loss": pa.array([float(s) for s in parquet_steps]),
        })
        # Two row groups, so the reader meets more than one batch per file.
        pq.write_table(table, self.parquet, row_group_size=max(1, len(parquet_steps) // 2))
        self.live = [json.dumps({"_step": s, "loss": float(s), "live": True}) for s in live_steps]
        self.live_steps = live_steps
        self.events = events
        self.events_count = events_count
        self.counts = counts  # False: a server without `eventsLineCount`
        self.calls = []
        self.written_to = []  # the files downloads went to (not kept in memory)

    def absolute_url(self, url):
        return url

    def download(self, url, dest, memory_limit=-1):
        # As the real transport: a file no larger than `memory_limit` comes back as bytes.
        self.calls.append(("download", url))
        data = self.parquet.read_bytes()
        if len(data) <= memory_limit:
            return data
        shutil.copy(self.parquet, dest)
        self.written_to.append(dest)
        return len(data)

    def get_tail(self, url, size):
        self.calls.append(("tail", url))
        return self.parquet.read_bytes()[-size:]

    def graphql(self, query, variables=None):
        variables = variables or {}
        self.calls.append((query, dict(variables)))
        if not self.counts and "eventsLineCount" in query:
            raise WandbQueryError("Cannot query field 'eventsLineCount' on type 'Run'.")
        if query is queries.RUN_HISTORY_PLAN:
            last = max(self.live_steps) if self.live_steps else -1
            run = {"historyKeys": {"keys": {}, "lastStep": last}, "eventsLineCount": self.events_count}
            if variables["parquet"]:
                run["parquetHistory"] = {"parquetUrls": ["http://storage/x.parquet"]}
            if variables.get("events"):
                run["events"] = [json.dumps(e) for e in self.events[: variables["samples"]]]
        elif query is queries.RUN_COUNTED_EVENTS:
            run = {"eventsLineCount": self.events_count,
                   "events": [json.dumps(e) for e in self.events[: variables["samples"]]]}
        elif query is queries.RUN_PARQUET_HISTORY:
            run = {"parquetHistory": {"parquetUrls": ["http://storage/x.parquet"],
                                      "liveData": [{"_step": s} for s in self.live_steps]}}
        elif query is queries.RUN_HISTORY_KEYS:
            last = max(self.live_steps) if self.live_steps else -1
            run = {"historyKeys": {"keys": {}, "lastStep": last}}
        elif query is queries.HISTORY_PAGE:
            a, b, n = variables["minStep"], variables["maxStep"], variables["pageSize"]
            pairs = zip(self.live, self.live_steps, strict=True)
            run = {"history": [r for r, s in pairs if a <= s < b][:n]}
        elif query is queries.RUN_EVENTS_LINE_COUNT:
            run = {"eventsLineCount": self.events_count}
        elif query is queries.RUN_FULL_EVENTS:
            run = {"events": [json.dumps(e) for e in self.events[: variables["samples"]]]}
        else:
            raise AssertionError(f"unexpected query {query[:60]}")
        return {"project": {"run": run}}


def make_run(transport):
    api = SimpleNamespace(transport=transport, app_url="http://app")
    return Run(api, "e", "p", "r", attrs={"id": "sid", "name": "r", "state": "finished"})


def test_parquet_then_live_tail_deduplicated_by_step(tmp_path):
    # Exported: steps 0..99. The live endpoint still holds 60..149 (overlap 60..99).
    fake = FakeTransport(tmp_path, list(range(100)), list(range(60, 150)), [], 0)
    batches = list(make_run(fake).iter_history_batches(page_size=20, parquet_batch_rows=30))
    rows = [r for b in batches for r in batch_to_rows(b)]
    assert [r["_step"] for r in rows] == list(range(150))
    assert all("live" not in r for r in rows[:100]) and all(r["live"] for r in rows[100:])
    pages = [c[1] for c in fake.calls if c[0] is queries.HISTORY_PAGE]
    assert pages and pages[0]["minStep"] == 100  # the tail starts above the last exported step
    assert all(b.schema.names[0] == "_step" for b in batches)


def test_min_step_inside_the_tail_and_inside_parquet(tmp_path):
    fake = FakeTransport(tmp_path, list(range(100)), list(range(60, 150)), [], 0)
    rows = [r for b in make_run(fake).iter_history_batches(min_step=120) for r in batch_to_rows(b)]
    assert [r["_step"] for r in rows] == list(range(120, 150))
    # The export's footer says it ends at step 99: an incremental read from 120 does not download it.
    assert ("tail", "http://storage/x.parquet") in fake.calls
    assert not [c for c in fake.calls if c[0] == "download"]
    rows = [r for b in make_run(fake).iter_history_batches(min_step=50, max_step=110)
            for r in batch_to_rows(b)]
    assert [r["_step"] for r in rows] == list(range(50, 110))


def test_system_metric_count_is_checked(tmp_path):
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    ok = FakeTransport(tmp_path, [0], [], events, 10)
    assert sum(b.num_rows for b in make_run(ok).iter_system_metrics_batches(batch_rows=4)) == 10
    short = FakeTransport(tmp_path, [0], [], events[:7], 10)
    with pytest.raises(WandbIncompleteDataError, match="holds 10 .* returned 7"):
        list(make_run(short).iter_system_metrics_batches())
    none = FakeTransport(tmp_path, [0], [], [], 0)
    assert list(make_run(none).iter_system_metrics_batches()) == []
    assert not any(c[0] is queries.RUN_FULL_EVENTS for c in none.calls)


def test_one_request_plans_the_history_export(tmp_path):
    # Parquet URLs, the last step and the system-metric count arrive together; the system
    # metrics then take one request.
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, list(range(100)), list(range(60, 150)), events, 10)
    run = make_run(fake)
    assert sum(b.num_rows for b in run.iter_history_batches(page_size=100)) == 150
    assert sum(b.num_rows for b in run.iter_system_metrics_batches()) == 10
    kinds = [c[0] if c[0] == "download" else c[0].split("(")[0].split()[-1] for c in fake.calls]
    assert kinds == ["RunHistoryPlan", "download", "HistoryPage", "RunCountedEvents"]


def test_system_metrics_logged_after_the_plan_are_not_sampled_away(tmp_path):
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, [0], [], events[:6], 6)
    run = make_run(fake)
    list(run.iter_history_batches())
    fake.events, fake.events_count = events, 10  # the run logged 4 more rows meanwhile
    rows = [r for b in run.iter_system_metrics_batches() for r in batch_to_rows(b)]
    assert [r["_timestamp"] for r in rows] == [float(i) for i in range(10)]
    asked = [c[1]["samples"] for c in fake.calls if c[0] is queries.RUN_COUNTED_EVENTS]
    assert asked == [6, 10]


def test_server_without_events_line_count(tmp_path):
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, list(range(100)), list(range(60, 150)), events, 10, counts=False)
    run = make_run(fake)
    assert [r["_step"] for b in run.iter_history_batches() for r in batch_to_rows(b)] == list(range(150))
    assert sum(b.num_rows for b in run.iter_system_metrics_batches()) == 10
    assert any(c[0] is queries.RUN_FULL_EVENTS and c[1]["samples"] > 10 for c in fake.calls)


def test_an_export_plans_history_and_reads_system_metrics_in_one_request(tmp_path):
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, list(range(100)), list(range(60, 150)), events, 10)
    run = make_run(fake)
    assert sum(b.num_rows for b in run.iter_history_batches(page_size=100, with_system_metrics=True)) == 150
    rows = [r for b in run.iter_system_metrics_batches() for r in batch_to_rows(b)]
    assert [r["_timestamp"] for r in rows] == [float(i) for i in range(10)]
    kinds = [c[0] if c[0] == "download" else c[0].split("(")[0].split()[-1] for c in fake.calls]
    assert kinds == ["RunHistoryPlan", "download", "HistoryPage"]
    # The rows were taken once: a later read asks the server again.
    assert sum(b.num_rows for b in run.iter_system_metrics_batches()) == 10
    assert [c for c in fake.calls if c[0] is queries.RUN_COUNTED_EVENTS]


def test_system_metrics_short_of_their_count_in_the_plan_are_asked_again(tmp_path):
    # The plan's rows fall short of its count (a server capping `samples`): they are not
    # used, and the counted read that follows gets all of them or says what is missing.
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, [0], [], events[:7], 10)
    run = make_run(fake)
    list(run.iter_history_batches(with_system_metrics=True))
    fake.events = events
    assert sum(b.num_rows for b in run.iter_system_metrics_batches()) == 10
    asked = [c[1]["samples"] for c in fake.calls if c[0] is queries.RUN_COUNTED_EVENTS]
    assert asked == [10]


def test_a_server_refusing_system_metrics_in_the_plan_is_asked_without_them(tmp_path):
    events = [{"_timestamp": float(i), "system.cpu": 1.0} for i in range(10)]
    fake = FakeTransport(tmp_path, list(range(100)), [], events, 10)
    graphql = fake.graphql

    def refuse_events(query, variables=None):
        if query is queries.RUN_HISTORY_PLAN and (variables or {}).get("events"):
            fake.calls.append((query, dict(variables)))
            raise WandbQueryError("samples: too large")
        return graphql(query, variables)

    fake.graphql = refuse_events
    run = make_run(fake)
    assert sum(b.num_rows for b in run.iter_history_batches(with_system_metrics=True)) == 100
    assert sum(b.num_rows for b in run.iter_system_metrics_batches()) == 10
    kinds = [c[0] if c[0] == "download" else c[0].split("(")[0].split()[-1] for c in fake.calls]
    assert kinds == ["RunHistoryPlan", "RunHistoryPlan", "download", "RunCountedEvents"]


@pytest.fixture(params=["in memory", "to a file"])
def download_to(request, monkeypatch):
    """Both ways an exported file arrives: small enough to keep in memory, or written to a
    temporary file (`MEMORY_DOWNLOAD_MAX` 0)."""
    if request.param == "to a file":
        monkeypatch.setattr(history, "MEMORY_DOWNLOAD_MAX", 0)
    return request.param


def test_a_file_of_many_batches_is_read_whole_in_order_and_its_download_removed(tmp_path, download_to):
    # 2,000 exported rows in batches of 256: read a batch ahead in a thread while the caller works.
    fake = FakeTransport(tmp_path, list(range(2000)), [], [], 0)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    batches = list(make_run(fake).iter_history_batches(parquet_batch_rows=256, tmp_dir=downloads))
    assert len(batches) > 2
    assert [r["_step"] for b in batches for r in batch_to_rows(b)] == list(range(2000))
    assert [r["loss"] for r in batch_to_rows(batches[-1])][-1] == 1999.0
    assert list(downloads.iterdir()) == []
    # The caller stops after the first batch: the download is removed all the same.
    reader = make_run(fake).iter_history_batches(parquet_batch_rows=256, tmp_dir=downloads)
    assert next(reader).num_rows == 256
    reader.close()
    assert list(downloads.iterdir()) == []
    assert len(fake.written_to) == (2 if download_to == "to a file" else 0)
    assert all(str(path).startswith(str(downloads)) for path in fake.written_to)


def test_a_file_that_breaks_after_its_first_batches_fails_naming_it(tmp_path, download_to):
    fake = FakeTransport(tmp_path, list(range(2000)), [], [], 0)
    # The second row group's first page header is overwritten: the footer still parses, so the
    # download passes its check, and reading fails part-way through the file.
    offset = pq.ParquetFile(fake.parquet).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(fake.parquet.read_bytes())
    data[offset:offset + 16] = b"\xff" * 16
    fake.parquet.write_bytes(bytes(data))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    rows = []
    with pytest.raises(WandbIncompleteDataError, match=r"run e/p/r: exported history .*x\.parquet could not be read"):
        for batch in make_run(fake).iter_history_batches(parquet_batch_rows=256, tmp_dir=downloads):
            rows.extend(batch_to_rows(batch))
    assert [r["_step"] for r in rows] == list(range(len(rows)))  # what came before the break, in order
    assert len(rows) < 2000
    assert list(downloads.iterdir()) == []
    assert len(fake.written_to) == (1 if download_to == "to a file" else 0)
