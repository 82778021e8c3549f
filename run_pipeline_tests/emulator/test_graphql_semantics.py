"""The emulator's GraphQL semantics over raw HTTP: history windows and sampling, sampledHistory,
Parquet/live history never overlapping, stable run cursors while runs come and go, counts,
file placeholders and paging, nulls for missing objects, and the SDK's wire quirks."""

from __future__ import annotations

import io
import json
import math

import pyarrow.parquet as pq
import pytest
import requests

ENTITY = "demo"
PROJECT = "semantics"

RUN_FIELDS = "query($p: String!, $r: String!) { project(name: $p, entityName: \"demo\") { run(name: $r) { %s } } }"
RUNS_PAGE = """
query($p: String!, $f: JSONString, $o: String, $n: Int, $c: String) {
  project(name: $p, entityName: "demo") {
    runCount(filters: $f)
    runs(filters: $f, order: $o, first: $n, after: $c) {
      totalCount edges { node { id name } cursor } pageInfo { endCursor hasNextPage }
    }
  }
}"""


def post(emulator, body: dict) -> requests.Response:
    return requests.post(f"{emulator.base_url}/graphql", json=body, auth=("api", emulator.api_key), timeout=30)


def gql(emulator, query: str, **variables) -> dict:
    """`data` of a query that must succeed with no `errors` at all (the SDK fails on any)."""
    r = post(emulator, {"query": query, "variables": variables})
    body = r.json()
    assert r.status_code == 200 and "errors" not in body, body
    return body["data"]


def run_field(emulator, fields: str, run_id: str, project: str = PROJECT) -> dict:
    return gql(emulator, RUN_FIELDS % fields, p=project, r=run_id)["project"]["run"]


def make_run(emulator, run_id: str, rows: list[dict] = (), *, project: str = PROJECT, state: str = "running",
             created_at: str | None = None, summary: dict | None = None):
    store = emulator.store
    meta = {"state": state}
    if created_at:
        meta["created_at"] = meta["heartbeat_at"] = created_at
    run = store.create_run(ENTITY, project, run_id, meta)
    if rows:
        store.append_history(ENTITY, project, run_id, list(rows))
    if summary is not None:
        store.update_run(run, summary=summary)
    return run


def steps_of(history: list[str]) -> list[int]:
    return [json.loads(line)["_step"] for line in history]


# -- history(minStep, maxStep, samples) ----------------------------------------------------------
def test_history_window_is_half_open(emulator):
    make_run(emulator, "even", [{"_step": s, "loss": s / 10} for s in range(0, 60, 2)])
    got = run_field(emulator, "a: history(minStep: 10, maxStep: 20) b: history(minStep: 11, maxStep: 21)"
                              " c: history(minStep: 10, maxStep: 10)", "even")
    assert steps_of(got["a"]) == [10, 12, 14, 16, 18]
    assert steps_of(got["b"]) == [12, 14, 16, 18, 20]
    assert got["c"] == []
    assert json.loads(got["a"][0]) == {"_step": 10, "loss": 1.0}


def test_adjacent_history_windows_cover_every_row_once(emulator):
    make_run(emulator, "even", [{"_step": s, "loss": s / 10} for s in range(0, 60, 2)])
    pages = [run_field(emulator, f"history(minStep: {a}, maxStep: {a + 16}, samples: 16)", "even")["history"]
             for a in range(0, 64, 16)]
    assert [len(p) for p in pages] == [8, 8, 8, 6]
    assert [s for p in pages for s in steps_of(p)] == list(range(0, 60, 2))


def test_history_window_returns_rows_up_to_samples(emulator):
    make_run(emulator, "even", [{"_step": s} for s in range(0, 60, 2)])
    got = run_field(emulator, "history(minStep: 10, maxStep: 40, samples: 3)", "even")
    assert steps_of(got["history"]) == [10, 12, 14]


def test_history_without_window_downsamples_to_500_keeping_first_and_last(emulator):
    make_run(emulator, "long", [{"_step": s, "x": s} for s in range(1201)])
    got = run_field(emulator, "all: history historyLineCount few: history(samples: 7) many: history(samples: 5000)", "long")
    steps = steps_of(got["all"])
    assert got["historyLineCount"] == 1201
    assert len(steps) == 500 and steps[0] == 0 and steps[-1] == 1200
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps <= {2, 3}  # evenly spaced: 1200 / 499 ≈ 2.4
    assert steps_of(got["few"]) == [0, 200, 400, 600, 800, 1000, 1200]
    assert steps_of(got["many"]) == list(range(1201))


def test_history_is_served_in_step_order_even_when_logged_out_of_order(emulator):
    make_run(emulator, "shuffled", [{"_step": s} for s in (5, 1, 3, 0, 4, 2)])
    got = run_field(emulator, "all: history w: history(minStep: 1, maxStep: 4)", "shuffled")
    assert steps_of(got["all"]) == [0, 1, 2, 3, 4, 5]
    assert steps_of(got["w"]) == [1, 2, 3]

def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the outer JSON"))


def test_history_and_events_pages_are_the_logged_lines(emulator):
    """Each page item is its logged line's JSON text, unchanged: NaN/Infinity tokens, integers
    beyond 64 bits and non-ASCII text included, whether or not the rest of the response holds
    values a fast JSON writer refuses (historyKeys' last value here is beyond 64 bits)."""
    rows = [{"_step": 0, "v": float("nan"), "big": 2**70, "text": "é ☃ \u2028 \"q\" \\n"},
            {"_step": 1, "v": float("inf"), "w": float("-inf"), "tiny": 3e-8},
            {"_step": 2, "v": 0.5, "big": -(2**64) - 1, "nested": {"a": [1, None, {"b": True}]}}]
    run = make_run(emulator, "odd-values", rows)
    emulator.store.append_system(ENTITY, PROJECT, "odd-values", [{"_runtime": 1, "system.cpu": 0.5},
                                                                 {"_runtime": 2, "system.gpu.0.temp": float("nan")}])
    history_lines = (run.dir / "history.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    event_lines = (run.dir / "system.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    for fields in ("history(minStep: 0, maxStep: 3, samples: 10) events(samples: 10)",
                   "history(minStep: 0, maxStep: 3, samples: 10) events(samples: 10) historyKeys"):
        r = post(emulator, {"query": RUN_FIELDS % fields, "variables": {"p": PROJECT, "r": "odd-values"}})
        assert r.status_code == 200
        got = strict_json(r.content.decode("utf-8"))["data"]["project"]["run"]
        assert got["history"] == history_lines and got["events"] == event_lines
    assert got["historyKeys"]["keys"]["big"]["previousValue"] == -(2**64) - 1
    assert got["historyKeys"]["keys"]["v"]["previousValue"] == 0.5
    parsed = [json.loads(line) for line in got["history"]]
    assert math.isnan(parsed[0]["v"]) and parsed[0]["big"] == 2**70 and parsed[0]["text"] == rows[0]["text"]
    assert parsed[1]["w"] == -math.inf and parsed[2]["big"] == -(2**64) - 1



# -- sampledHistory(specs) -----------------------------------------------------------------------
SAMPLED_Q = ("query($p: String!, $r: String!, $s: [JSONString!]!) {"
             " project(name: $p, entityName: \"demo\") { run(name: $r) { sampledHistory(specs: $s) } } }")


def sampled_rows():
    # "b" only on even steps, "c" only from step 6 on.
    return [{"_step": s, "a": s * 1.5, **({"b": s} if s % 2 == 0 else {}), **({"c": "x"} if s >= 6 else {})}
            for s in range(10)]


def test_sampled_history_max_step_is_inclusive_and_keys_deduplicated(emulator):
    make_run(emulator, "sh", sampled_rows())
    spec = json.dumps({"keys": ["_step", "b", "_step"], "minStep": 2, "maxStep": 6, "samples": 100})
    got = gql(emulator, SAMPLED_Q, p=PROJECT, r="sh", s=[spec])
    assert got["project"]["run"]["sampledHistory"] == [[{"_step": 2, "b": 2}, {"_step": 4, "b": 4}, {"_step": 6, "b": 6}]]


def test_sampled_history_has_one_result_per_spec_with_rows_holding_all_keys(emulator):
    make_run(emulator, "sh", sampled_rows())
    specs = [json.dumps({"keys": ["_step", "b", "c"]}),
             json.dumps({"keys": ["a"], "minStep": 8}),
             json.dumps({"keys": ["nope"]}),
             json.dumps({"keys": ["_step"], "samples": 3})]
    got = gql(emulator, SAMPLED_Q, p=PROJECT, r="sh", s=specs)["project"]["run"]["sampledHistory"]
    assert len(got) == 4
    assert got[0] == [{"_step": 6, "b": 6, "c": "x"}, {"_step": 8, "b": 8, "c": "x"}]
    assert got[1] == [{"a": 12.0}, {"a": 13.5}]
    assert got[2] == []
    assert got[3] == [{"_step": 0}, {"_step": 4}, {"_step": 9}]  # down-sampled only past `samples`


def test_sampled_history_pages_like_wandb_core(emulator):
    """0.31 asks for [a, b-1] per window with _step twice: every step exactly once."""
    make_run(emulator, "sh", [{"_step": s, "m": s} for s in range(25)])
    seen = []
    for a in range(0, 25, 10):
        b = min(a + 10, 25)
        spec = json.dumps({"keys": ["_step", "m", "_step"], "minStep": a, "maxStep": b - 1, "samples": b - a})
        seen += gql(emulator, SAMPLED_Q, p=PROJECT, r="sh", s=[spec])["project"]["run"]["sampledHistory"][0]
    assert seen == [{"_step": s, "m": s} for s in range(25)]


# -- parquetHistory(liveKeys): Parquet or live, never both ----------------------------------------
PARQUET_Q = "ph: parquetHistory(liveKeys: [\"_step\"]) { parquetUrls liveData } historyLineCount"
ROWS = [{"_step": s, "loss": 1 / (s + 1), "name": f"r{s}"} for s in range(0, 40, 3)]


def parquet_steps(url: str) -> list[int]:
    return pq.read_table(io.BytesIO(requests.get(url, timeout=30).content)).column("_step").to_pylist()


def test_finished_run_is_all_parquet_and_running_run_all_live(emulator):
    make_run(emulator, "done", ROWS, state="finished")
    make_run(emulator, "live", ROWS, state="running")
    done = run_field(emulator, PARQUET_Q, "done")["ph"]
    assert done["liveData"] == [] and len(done["parquetUrls"]) == 1
    assert parquet_steps(done["parquetUrls"][0]) == [r["_step"] for r in ROWS]
    live = run_field(emulator, PARQUET_Q, "live")["ph"]
    assert live == {"parquetUrls": [], "liveData": [{"_step": r["_step"]} for r in ROWS]}


def test_live_data_carries_the_requested_keys(emulator):
    make_run(emulator, "live", ROWS + [{"_step": 50}], state="running")
    got = run_field(emulator, "parquetHistory(liveKeys: [\"_step\", \"loss\"]) { parquetUrls liveData }", "live")
    live = got["parquetHistory"]["liveData"]
    assert got["parquetHistory"]["parquetUrls"] == []
    assert [r["_step"] for r in live] == [r["_step"] for r in ROWS] + [50]
    assert live[1] == {"_step": 3, "loss": 0.25} and live[-1] == {"_step": 50}


def test_parquet_mode_switches_whole_runs(emulator):
    make_run(emulator, "done", ROWS, state="finished")
    make_run(emulator, "live", ROWS, state="running")
    control = f"{emulator.base_url}/_control/parquet-mode"
    assert requests.post(control, json={"mode": "live"}, auth=("api", emulator.api_key)).json() == {"mode": "live"}
    done = run_field(emulator, PARQUET_Q, "done")["ph"]
    assert done["parquetUrls"] == [] and len(done["liveData"]) == len(ROWS)
    assert requests.post(control, json={"mode": "parquet"}, auth=("api", emulator.api_key)).ok
    live = run_field(emulator, PARQUET_Q, "live")["ph"]
    assert live["liveData"] == [] and parquet_steps(live["parquetUrls"][0]) == [r["_step"] for r in ROWS]
    bad = requests.post(control, json={"mode": "sometimes"}, auth=("api", emulator.api_key))
    assert bad.status_code == 400 and "parquet_mode must be one of" in bad.json()["errors"][0]["message"]


def test_finished_run_with_media_is_exported_with_a_struct_column(emulator):
    rows = ROWS + [{"_step": 60, "img": {"_type": "image-file", "path": "a.png"}}]
    make_run(emulator, "media", rows, state="finished")
    got = run_field(emulator, PARQUET_Q, "media")["ph"]
    assert got["liveData"] == [] and parquet_steps(got["parquetUrls"][0]) == [r["_step"] for r in rows]


def test_finished_run_with_unexportable_values_is_all_live(emulator):
    # An integer beyond 64 bits has no Parquet type W&B's exports use.
    rows = ROWS + [{"_step": 60, "huge": 2**70}]
    make_run(emulator, "huge", rows, state="finished")
    got = run_field(emulator, PARQUET_Q, "huge")["ph"]
    assert got == {"parquetUrls": [], "liveData": [{"_step": r["_step"]} for r in rows]}


def test_parquet_export_follows_appended_rows(emulator):
    make_run(emulator, "done", ROWS, state="finished")
    first = run_field(emulator, PARQUET_Q, "done")["ph"]["parquetUrls"][0]
    emulator.store.append_history(ENTITY, PROJECT, "done", [{"_step": 100, "loss": 0.0, "name": "late"}])
    again = run_field(emulator, PARQUET_Q, "done")["ph"]
    assert again["liveData"] == [] and again["parquetUrls"][0] != first
    assert parquet_steps(again["parquetUrls"][0]) == [r["_step"] for r in ROWS] + [100]


# -- runs paging: cursors stay stable while runs come and go ---------------------------------------
def created(i: int) -> str:
    return f"2026-11-10T{i:02d}:00:00Z"


def page(emulator, order: str | None, first: int, after: str | None, filters: dict | None = None,
         project: str = PROJECT) -> tuple[list[str], str | None, bool]:
    conn = gql(emulator, RUNS_PAGE, p=project, f=json.dumps(filters or {}), o=order, n=first, c=after)["project"]["runs"]
    edges = conn["edges"]
    if edges:
        assert conn["pageInfo"]["endCursor"] == edges[-1]["cursor"]
    return [e["node"]["name"] for e in edges], (edges[-1]["cursor"] if edges else after), conn["pageInfo"]["hasNextPage"]


def storage_id(emulator, run_id: str) -> str:
    return emulator.store.get_run(ENTITY, PROJECT, run_id).storage_id


def test_paging_survives_deleting_the_cursor_run_and_others(emulator):
    for i in range(8):
        make_run(emulator, f"r{i}", created_at=created(i))
    names, cursor, more = page(emulator, "+created_at", 3, None)
    assert names == ["r0", "r1", "r2"] and more
    # Delete the run the cursor points at, through the mutation the SDK uses.
    gql(emulator, "mutation($id: ID!) { deleteRun(input: {id: $id}) { clientMutationId } }", id=storage_id(emulator, "r2"))
    names, cursor, more = page(emulator, "+created_at", 3, cursor)
    assert names == ["r3", "r4", "r5"] and more
    # Delete one already listed and one not yet listed, through the Python API.
    emulator.store.delete_run(emulator.store.get_run(ENTITY, PROJECT, "r4"))
    emulator.store.delete_run(emulator.store.get_run(ENTITY, PROJECT, "r6"))
    names, cursor, more = page(emulator, "+created_at", 3, cursor)
    assert names == ["r7"] and not more


def test_paging_survives_runs_created_between_pages(emulator):
    for i in range(0, 12, 2):
        make_run(emulator, f"r{i:02d}", created_at=created(i))
    seen, cursor = [], None
    names, cursor, _ = page(emulator, "-created_at", 2, cursor)
    seen += names
    assert names == ["r10", "r08"]
    make_run(emulator, "r11", created_at=created(11))  # before the cursor: not this listing's business
    make_run(emulator, "r05", created_at=created(5))   # after the cursor: listed in its place
    make_run(emulator, "r08b", created_at=created(8))  # same time as the cursor run: tie-break decides
    while True:
        names, cursor, more = page(emulator, "-created_at", 2, cursor)
        seen += names
        if not more:
            break
    assert len(seen) == len(set(seen))
    assert [n for n in seen if n not in ("r08b",)] == ["r10", "r08", "r06", "r05", "r04", "r02", "r00"]


@pytest.mark.parametrize("order", ["+summary_metrics.loss", "-summary_metrics.loss", "+config.lr.value",
                                   "-heartbeat_at", "+created_at"])
def test_one_run_per_page_lists_every_run_once_in_the_full_order(emulator, order):
    """Ties, missing values, NaN and Infinity included: paging by one equals the one-page listing."""
    losses = [0.5, 0.5, math.nan, None, math.inf, 0.1, math.nan, -math.inf, 0.5]
    store = emulator.store
    for i, loss in enumerate(losses):
        run = make_run(emulator, f"t{i}", created_at=created(i % 3), summary={} if loss is None else {"loss": loss})
        store.update_run(run, config={"lr": [0.1, 0.2][i % 2]} if i % 4 else {})
    whole, _, more = page(emulator, order, 100, None)
    assert sorted(whole) == [f"t{i}" for i in range(len(losses))] and not more
    paged, cursor = [], None
    for _ in range(len(losses) + 1):
        names, cursor, more = page(emulator, order, 1, cursor)
        paged += names
        if not more:
            break
    assert paged == whole


def test_run_count_equals_listed_runs_for_the_same_filters(emulator):
    project = "image-classification"
    meta = {p.name: json.loads((p / "run.json").read_text())
            for p in (emulator.dataset_dir / ENTITY / project).iterdir() if (p / "run.json").exists()}
    lr_mid = sorted(m["config"]["lr"] for m in meta.values())[len(meta) // 2]
    for flt in ({}, {"state": "finished"}, {"state": {"$ne": "finished"}}, {"tags": {"$in": ["prod", "sweep"]}},
                {"$or": [{"config.lr": {"$gte": lr_mid}}, {"group": None}]}, {"state": "no-such-state"}):
        data = gql(emulator, RUNS_PAGE, p=project, f=json.dumps(flt), n=4)["project"]
        listed, cursor, more = page(emulator, None, 4, None, flt, project)
        while more:
            names, cursor, more = page(emulator, None, 4, cursor, flt, project)
            listed += names
        assert data["runCount"] == data["runs"]["totalCount"] == len(listed) == len(set(listed)), flt
    assert gql(emulator, RUNS_PAGE, p=project, f="{}")["project"]["runCount"] == len(meta)


def test_malformed_filter_is_an_error_even_in_an_empty_project(emulator):
    emulator.store.ensure_project(ENTITY, "empty")
    body = post(emulator, {"query": RUNS_PAGE, "variables": {"p": "empty", "f": json.dumps({"state": {"$in": "x"}})}}).json()
    assert body["errors"] and "$in at filters.state needs a list" in body["errors"][0]["message"]


# -- files ---------------------------------------------------------------------------------------
FILES_Q = ("files(names: $names, first: $n, after: $c) { totalCount edges { cursor node { name sizeBytes md5 url } }"
           " pageInfo { endCursor hasNextPage } } fileCount")
FILES_DOC = ("query($p: String!, $r: String!, $names: [String], $n: Int, $c: String) {"
             " project(name: $p, entityName: \"demo\") { run(name: $r) { %s } } }" % FILES_Q)


def test_files_names_gives_placeholders_for_missing_files(emulator):
    run = make_run(emulator, "f")
    emulator.store.write_file(run, "out/model.bin", b"12345")
    got = gql(emulator, FILES_DOC, p=PROJECT, r="f", names=["missing.txt", "out/model.bin"])["project"]["run"]
    nodes = [e["node"] for e in got["files"]["edges"]]
    assert [n["name"] for n in nodes] == ["missing.txt", "out/model.bin"]
    assert nodes[0]["sizeBytes"] == 0 and nodes[0]["md5"] is None
    assert nodes[1]["sizeBytes"] == 5 and requests.get(nodes[1]["url"], auth=("api", emulator.api_key)).content == b"12345"
    assert got["fileCount"] == 1


def test_files_pagination(emulator):
    run = make_run(emulator, "f")
    names = sorted(f"file{i}.txt" for i in range(5)) + ["sub/z.txt"]
    for i, name in enumerate(names):
        emulator.store.write_file(run, name, b"x" * i)
    seen, cursor, pages = [], None, 0
    while True:
        conn = gql(emulator, FILES_DOC, p=PROJECT, r="f", n=4, c=cursor)["project"]["run"]["files"]
        pages += 1
        assert conn["totalCount"] == 6
        seen += [(e["node"]["name"], e["node"]["sizeBytes"]) for e in conn["edges"]]
        cursor = conn["edges"][-1]["cursor"]
        assert conn["pageInfo"]["endCursor"] == cursor
        if not conn["pageInfo"]["hasNextPage"]:
            break
    assert pages == 2 and seen == [(n, i) for i, n in enumerate(names)]


# -- missing objects are null, with no `errors` ------------------------------------------------------
def test_missing_project_run_and_artifact_are_null_without_errors(emulator):
    data = gql(emulator, """{
      nope: project(name: "no-such-project", entityName: "demo") { id runCount }
      otherEntity: project(name: "image-classification", entityName: "nobody") { id }
      real: project(name: "image-classification", entityName: "demo") {
        run(name: "no-such-run") { id name }
        artifact(name: "no-such:v0") { id }
        artifactCollectionMembership(name: "no-such:latest") { id }
      }
    }""")
    assert data["nope"] is None and data["otherEntity"] is None
    assert data["real"] == {"run": None, "artifact": None, "artifactCollectionMembership": None}


# -- wire quirks ---------------------------------------------------------------------------------
def test_undeclared_variables_and_null_variables_are_accepted(emulator):
    q = "query Probe($p: String!) { project(name: $p, entityName: \"demo\") { name } }"
    r = post(emulator, {"query": q, "variables": {"p": "rl-agents", "entity": "demo", "name": "x", "project": "y"}})
    assert r.status_code == 200 and r.json() == {"data": {"project": {"name": "rl-agents"}}}
    r = post(emulator, {"query": "query ServerFeaturesQuery { serverInfo { features { name } } }", "variables": None})
    assert r.status_code == 200 and "errors" not in r.json() and r.json()["data"]["serverInfo"]["features"]


def test_empty_operation_name_means_the_only_operation(emulator):
    q = "query Probe($p: String!) { project(name: $p, entityName: \"demo\") { name } }"
    r = post(emulator, {"query": q, "operationName": "", "variables": {"p": "llm-finetune"}})
    assert r.status_code == 200 and r.json() == {"data": {"project": {"name": "llm-finetune"}}}


def test_introspection_lists_run_fields(emulator):
    data = gql(emulator, "{ __type(name: \"Run\") { fields { name args { name } } } }")
    fields = {f["name"]: {a["name"] for a in f["args"]} for f in data["__type"]["fields"]}
    assert {"eventsLineCount", "history", "sampledHistory", "parquetHistory", "historyKeys", "files"} <= set(fields)
    assert fields["history"] == {"samples", "minStep", "maxStep"}
    assert fields["files"] >= {"names", "first", "after", "pattern"}
