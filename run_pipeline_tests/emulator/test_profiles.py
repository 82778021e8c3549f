"""Server profiles: each one reproduces a behaviour of the real W&B service. The wire behaviour
is checked over raw HTTP; where the real `wandb` SDK meets it, the SDK is run against it to show
what W&B users see. Timing profiles are driven by their options (a lag of an hour, then none),
never by sleeping."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest
import requests

from run_pipeline.emulator.server import EmulatorServer

ENTITY = "demo"
PROJECT = "profiles"
JAN_1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RUN_Q = 'query($p: String!, $r: String!) { project(name: $p, entityName: "demo") { run(name: $r) { %s } } }'
PARQUET = 'parquetHistory(liveKeys: ["_step"]) { parquetUrls liveData }'
RUNS_Q = """query($p: String!, $f: JSONString, $n: Int, $c: String) { project(name: $p, entityName: "demo") {
  runCount(filters: $f)
  runs(filters: $f, first: $n, after: $c) { totalCount edges { node { name state heartbeatAt } }
                                            pageInfo { endCursor hasNextPage } } } }"""


def post(emulator, body: dict, key: str | None = None) -> requests.Response:
    return requests.post(f"{emulator.base_url}/graphql", json=body, auth=("api", key or emulator.api_key), timeout=30)


def gql(emulator, query: str, **variables) -> dict:
    r = post(emulator, {"query": query, "variables": variables})
    body = r.json()
    assert r.status_code == 200 and "errors" not in body, body
    return body["data"]


def control(emulator, action: str, body: dict) -> requests.Response:
    return requests.post(f"{emulator.base_url}/_control/{action}", json=body, auth=("api", emulator.api_key), timeout=30)


def run_field(emulator, fields: str, run_id: str, project: str = PROJECT) -> dict:
    return gql(emulator, RUN_Q % fields, p=project, r=run_id)["project"]["run"]


def rows_of(steps, **extra) -> list[dict]:
    return [{"_step": s, "loss": 1.0 / (s + 1), **extra} for s in steps]


def make_run(emulator, run_id: str, steps=range(10), state: str = "finished", project: str = PROJECT, **extra):
    emulator.store.create_run(ENTITY, project, run_id, {"state": state})
    if steps:
        emulator.store.append_history(ENTITY, project, run_id, rows_of(steps, **extra))


def parquet_steps(url: str) -> list[int]:
    return pq.read_table(io.BytesIO(requests.get(url, timeout=30).content)).column("_step").to_pylist()


def served(emulator, run_id: str) -> dict:
    """Where each step of the run is served: Parquet, windowed live history, live data."""
    run = run_field(emulator, PARQUET + " all: history(minStep: 0, maxStep: 1000000) sampled: history(samples: 100000)",
                    run_id)
    urls = run["parquetHistory"]["parquetUrls"]
    return {"urls": urls, "parquet": parquet_steps(urls[0]) if urls else [],
            "live_data": [r["_step"] for r in run["parquetHistory"]["liveData"]],
            "window": [json.loads(r)["_step"] for r in run["all"]],
            "sampled": [json.loads(r)["_step"] for r in run["sampled"]]}


def listed(emulator, filters: dict | None = None) -> tuple[set, int]:
    data = gql(emulator, RUNS_Q, p=PROJECT, f=json.dumps(filters) if filters is not None else None, n=100)["project"]
    return {e["node"]["name"] for e in data["runs"]["edges"]}, data["runCount"]


# -- choosing profiles --------------------------------------------------------------------------
def test_control_endpoint_replaces_the_active_profiles(emulator):
    r = control(emulator, "profile", {"profiles": ["parquet-only", "empty-pages"], "options": {"filter_lag_seconds": 5}})
    assert r.status_code == 200
    assert r.json() == {"profiles": ["empty-pages", "parquet-only"],
                        "options": {"export_delay_seconds": 2.0, "filter_lag_seconds": 5.0}}
    assert control(emulator, "profile", {"profiles": ["viewer-null"]}).json()["profiles"] == ["viewer-null"]
    assert control(emulator, "profile", {"profiles": []}).json() == \
        {"profiles": [], "options": {"export_delay_seconds": 2.0, "filter_lag_seconds": 2.0}}
    assert post(emulator, {"query": "{ viewer { id } }"}, key="x" * 40).status_code == 401  # the default again


@pytest.mark.parametrize("body, message", [
    ({"profiles": ["parquet-only", "nope"]}, "unknown emulator profile 'nope'; known profiles: parquet-only, "
     "delayed-export, exclusive-maxstep, empty-pages, viewer-null, lagging-filters, crash-no-heartbeat"),
    ({"profiles": "parquet-only"}, "profiles must be a list of profile names, got 'parquet-only'"),
    ({"profiles": [], "options": {"lag": 1}}, "unknown profile option 'lag'; known options: export_delay_seconds, "
     "filter_lag_seconds"),
    ({"profiles": [], "options": {"export_delay_seconds": -1}}, "profile option export_delay_seconds must be a number "
     "of seconds >= 0, got -1"),
])
def test_bad_profile_requests_are_refused_by_name(emulator, body, message):
    r = control(emulator, "profile", body)
    assert r.status_code == 400 and r.json() == {"errors": [{"message": message}]}
    with pytest.raises(ValueError, match="unknown emulator profile 'x'"):
        emulator.server.set_profiles(["x"])
    assert emulator.store.profiles.active == frozenset()  # a refused request changes nothing


def test_constructor_refuses_an_unknown_profile_before_doing_anything(tmp_path):
    with pytest.raises(ValueError, match="unknown emulator profile 'parquet_only'"):
        EmulatorServer(tmp_path / "ds", profiles=["parquet_only"])
    assert not (tmp_path / "ds").exists()


# -- parquet-only ---------------------------------------------------------------------------------
def test_parquet_only_serves_an_exported_run_only_as_parquet(emulator):
    emulator.set_profiles(["parquet-only"])
    make_run(emulator, "done", range(10))
    s = served(emulator, "done")
    assert s["parquet"] == list(range(10)) and s["live_data"] == [] and s["window"] == []
    assert s["sampled"] == list(range(10))  # unwindowed reads still cover every step
    spec = json.dumps({"keys": ["_step"], "minStep": 0, "maxStep": 9})
    assert [r["_step"] for r in run_field(emulator, "sampledHistory(specs: [%s])" % json.dumps(spec), "done")
            ["sampledHistory"][0]] == list(range(10))
    # Without the profile the same run's windows are live as well.
    emulator.set_profiles([])
    assert served(emulator, "done")["window"] == list(range(10))


def test_parquet_only_export_is_a_snapshot_until_the_run_finishes_again(emulator):
    emulator.set_profiles(["parquet-only"])
    make_run(emulator, "snap", range(10))
    first = served(emulator, "snap")["urls"]
    emulator.store.append_history(ENTITY, PROJECT, "snap", rows_of(range(10, 13)))
    s = served(emulator, "snap")
    assert s["urls"] == first and s["parquet"] == list(range(10))
    assert s["live_data"] == s["window"] == [10, 11, 12]  # above the snapshot only, never twice
    emulator.store.set_state(ENTITY, PROJECT, "snap", "running")
    emulator.store.append_history(ENTITY, PROJECT, "snap", rows_of([13]))
    assert served(emulator, "snap")["window"] == [10, 11, 12, 13]
    emulator.store.set_state(ENTITY, PROJECT, "snap", "finished")
    s = served(emulator, "snap")
    assert s["urls"] != first and s["parquet"] == list(range(14)) and s["window"] == s["live_data"] == []


def test_parquet_only_running_runs_are_live_unless_parquet_mode_exports_them(emulator):
    emulator.set_profiles(["parquet-only"])
    make_run(emulator, "live", range(5), state="running")
    s = served(emulator, "live")
    assert s["urls"] == [] and s["window"] == s["live_data"] == list(range(5))
    emulator.set_parquet_mode("parquet")  # exported when first asked
    assert served(emulator, "live")["parquet"] == list(range(5))
    emulator.store.append_history(ENTITY, PROJECT, "live", rows_of([5, 6]))
    s = served(emulator, "live")
    assert s["parquet"] == list(range(5)) and s["window"] == [5, 6]


def test_parquet_only_keeps_unexportable_history_live(emulator):
    emulator.set_profiles(["parquet-only"])
    # Every shape exports to Parquet but an integer beyond 64 bits, which no Parquet column holds.
    make_run(emulator, "nested", range(4), a=2**70)
    s = served(emulator, "nested")
    assert s["urls"] == [] and s["window"] == s["live_data"] == list(range(4))


def test_parquet_only_sdk_scan_history_reads_parquet_then_the_live_tail(wandb_api, emulator):
    emulator.set_profiles(["parquet-only"])
    make_run(emulator, "sdk", range(30))
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/sdk")
    assert [r["_step"] for r in run.scan_history(page_size=7)] == list(range(30))
    served(emulator, "sdk")  # exported now; later rows are a live tail above it
    emulator.store.append_history(ENTITY, PROJECT, "sdk", rows_of(range(30, 35)))
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/sdk")
    got = list(run.scan_history(page_size=7))
    assert [r["_step"] for r in got] == list(range(35)) and got[-1]["loss"] == 1 / 35
    assert [r["_step"] for r in run.history(samples=1000, pandas=False)] == list(range(35))


# -- delayed-export -------------------------------------------------------------------------------
def test_delayed_export_serves_a_finished_run_live_until_the_delay_passed(emulator, wandb_api):
    make_run(emulator, "late", range(8), state="running")
    emulator.set_profiles(["delayed-export"], export_delay_seconds=3600)
    emulator.store.set_state(ENTITY, PROJECT, "late", "finished")
    s = served(emulator, "late")
    assert s["urls"] == [] and s["window"] == s["live_data"] == list(range(8))
    assert not emulator.store.served_from_parquet(emulator.store.get_run(ENTITY, PROJECT, "late"))
    assert [r["_step"] for r in wandb_api.run(f"{ENTITY}/{PROJECT}/late").scan_history()] == list(range(8))
    emulator.set_profiles(["delayed-export"], export_delay_seconds=0)
    s = served(emulator, "late")
    assert s["parquet"] == list(range(8)) and s["window"] == s["live_data"] == []  # then as parquet-only
    assert emulator.store.served_from_parquet(emulator.store.get_run(ENTITY, PROJECT, "late"))
    assert [r["_step"] for r in wandb_api.run(f"{ENTITY}/{PROJECT}/late").scan_history()] == list(range(8))


def test_delayed_export_counts_from_first_sight_for_runs_loaded_from_disk(emulator):
    make_run(emulator, "old", range(6))
    emulator.store.reload()  # now a finished run the emulator first sees on loading
    emulator.set_profiles(["delayed-export"], export_delay_seconds=3600)
    assert served(emulator, "old")["urls"] == []
    emulator.set_profiles(["delayed-export", "parquet-only"], export_delay_seconds=0)
    assert served(emulator, "old")["parquet"] == list(range(6))


# -- exclusive-maxstep ----------------------------------------------------------------------------
def test_exclusive_maxstep_drops_the_boundary_step_and_the_sdk_loses_it(emulator, wandb_api):
    make_run(emulator, "bounds", range(30), state="running")
    emulator.store.append_history(ENTITY, PROJECT, "bounds", [{"_step": 30, "eval": 0.5}])
    spec = json.dumps(json.dumps({"keys": ["_step"], "minStep": 2, "maxStep": 5}))
    assert [r["_step"] for r in run_field(emulator, f"sampledHistory(specs: [{spec}])", "bounds")["sampledHistory"][0]] \
        == [2, 3, 4, 5]
    emulator.set_profiles(["exclusive-maxstep"])
    assert [r["_step"] for r in run_field(emulator, f"sampledHistory(specs: [{spec}])", "bounds")["sampledHistory"][0]] \
        == [2, 3, 4]
    # The 0.31 SDK asks keyed scans for [min, min + page_size - 1] and takes maxStep as inclusive:
    # on such a server it silently skips every page's last step.
    rows = rows_of(range(31))
    keyed = [r["_step"] for r in wandb_api.run(f"{ENTITY}/{PROJECT}/bounds").scan_history(keys=["loss"], page_size=7)]
    assert keyed == [r["_step"] for r in rows[:30] if r["_step"] % 7 != 6]
    emulator.set_profiles([])
    keyed = [r["_step"] for r in wandb_api.run(f"{ENTITY}/{PROJECT}/bounds").scan_history(keys=["loss"], page_size=7)]
    assert keyed == list(range(30))


# -- empty-pages ----------------------------------------------------------------------------------
def follow(emulator, query: str, path: tuple, first: int, **variables) -> tuple[list, int]:
    """Every node of a connection, following endCursor while hasNextPage; and the empty pages seen."""
    nodes, empty, cursor = [], 0, None
    while True:
        conn = gql(emulator, query, n=first, c=cursor, **variables)
        for key in path:
            conn = conn[key]
        nodes += [e["node"]["name"] for e in conn["edges"]]
        empty += not conn["edges"]
        if not conn["pageInfo"]["hasNextPage"]:
            return nodes, empty
        cursor = conn["pageInfo"]["endCursor"]


def test_empty_pages_interleave_listings_and_every_row_stays_reachable(emulator, wandb_api):
    for i in range(7):
        make_run(emulator, f"r{i}", steps=())
    plain, empty = follow(emulator, RUNS_Q, ("project", "runs"), 3, p=PROJECT, f=None)
    assert sorted(plain) == [f"r{i}" for i in range(7)] and empty == 0
    emulator.set_profiles(["empty-pages"])
    runs, empty = follow(emulator, RUNS_Q, ("project", "runs"), 3, p=PROJECT, f=None)
    assert runs == plain and empty == 3  # empty, 3 runs, empty, 3 runs, empty, 1 run
    first = gql(emulator, RUNS_Q, p=PROJECT, f=None, n=3, c=None)["project"]["runs"]
    assert first["edges"] == [] and first["pageInfo"]["hasNextPage"] and first["totalCount"] == 7
    models = "query($n: Int, $c: String) { models(entityName: \"demo\", first: $n, after: $c) { edges { node { name } } pageInfo { endCursor hasNextPage } } }"
    projects, empty = follow(emulator, models, ("models",), 2)
    assert sorted(projects) == sorted(p.name for p in emulator.store.list_projects(ENTITY)) and empty >= 2
    # The 0.31 SDK stops at the first empty page: W&B users see an empty listing.
    assert list(wandb_api.runs(f"{ENTITY}/{PROJECT}", per_page=3)) == []
    assert list(wandb_api.projects(ENTITY)) == []


# -- viewer-null ----------------------------------------------------------------------------------
def test_viewer_null_answers_a_bad_key_with_nulls(emulator):
    bad = "x" * 40
    emulator.set_profiles(["viewer-null"])
    r = post(emulator, {"query": "{ viewer { id username } }"}, key=bad)
    assert r.status_code == 200 and r.json() == {"data": {"viewer": None}}
    r = post(emulator, {"query": 'query Q { p: project(name: "x", entityName: "demo") { id } ...F } '
                                 "fragment F on Query { viewer { id } serverInfo { features { name } } }",
                        "operationName": "Q"}, key=bad)
    assert r.status_code == 200 and r.json() == {"data": {"p": None, "viewer": None, "serverInfo": None}}
    r = post(emulator, {"query": 'mutation { upsertBucket(input: {name: "n"}) { inserted } }'}, key=bad)
    assert r.json() == {"data": {"upsertBucket": None}} and emulator.store.get_run(ENTITY, "uncategorized", "n") is None
    r = post(emulator, {"query": "query A { viewer { id } } query B { viewer { id } }"}, key=bad)
    assert r.status_code == 400 and r.json()["errors"][0]["message"] == \
        "Must provide operation name if query contains multiple operations."
    assert post(emulator, {"query": "{ viewer { username } }"}).json()["data"]["viewer"]["username"] == ENTITY
    assert control(emulator, "stats", {}).status_code == 200
    assert requests.post(f"{emulator.base_url}/_control/stats", json={}, auth=("api", bad), timeout=10).status_code == 401


def test_viewer_null_is_an_authentication_error_in_the_sdk(wandb_env):
    import wandb

    wandb_env.set_profiles(["viewer-null"])
    with pytest.raises(wandb.errors.AuthenticationError, match="did not recognize an account"):
        wandb.Api(api_key="y" * 40, overrides={"base_url": wandb_env.base_url}, timeout=10)


# -- lagging-filters ------------------------------------------------------------------------------
def test_lagging_filters_match_the_old_state_until_the_lag_passed(emulator, wandb_api):
    make_run(emulator, "a", range(3), state="running")
    make_run(emulator, "b", range(3), state="running")
    emulator.store.reload()  # both have been running for as long as the emulator knows
    emulator.set_profiles(["lagging-filters"], filter_lag_seconds=3600)
    emulator.store.set_state(ENTITY, PROJECT, "a", "finished")
    make_run(emulator, "new", steps=(), state="finished")
    assert listed(emulator, {"state": "finished"}) == (set(), 0)
    assert listed(emulator, {"state": "running"}) == ({"a", "b"}, 2)
    assert [r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", filters={"state": "finished"})] == []
    # Unfiltered listings and lookups are current.
    all_runs = gql(emulator, RUNS_Q, p=PROJECT, f=None, n=10)["project"]["runs"]["edges"]
    assert {e["node"]["name"]: e["node"]["state"] for e in all_runs} == {"a": "finished", "b": "running", "new": "finished"}
    assert listed(emulator, {}) == ({"a", "b", "new"}, 3)
    assert run_field(emulator, "state", "a") == {"state": "finished"}
    emulator.set_profiles(["lagging-filters"], filter_lag_seconds=0)
    assert listed(emulator, {"state": "finished"}) == ({"a", "new"}, 2)


def test_lagging_filters_see_an_old_heartbeat(emulator):
    make_run(emulator, "hb", range(3), state="running")
    emulator.store.touch_heartbeat(ENTITY, PROJECT, "hb", when=JAN_1)
    emulator.store.reload()
    emulator.set_profiles(["lagging-filters"], filter_lag_seconds=3600)
    emulator.store.touch_heartbeat(ENTITY, PROJECT, "hb")
    newer = {"heartbeatAt": {"$gt": "2026-06-01T00:00:00Z"}}
    assert listed(emulator, newer) == (set(), 0)
    emulator.set_profiles(["lagging-filters"], filter_lag_seconds=0)
    assert listed(emulator, newer) == ({"hb"}, 1)


# -- crash-no-heartbeat ---------------------------------------------------------------------------
@pytest.mark.parametrize("profiles, moves", [([], True), (["crash-no-heartbeat"], False)], ids=["default", "profile"])
def test_state_changes_and_the_heartbeat(emulator, profiles, moves):
    make_run(emulator, "c", range(3), state="running")
    emulator.store.touch_heartbeat(ENTITY, PROJECT, "c", when=JAN_1)
    emulator.set_profiles(profiles)
    assert control(emulator, "set-state", {"entity": ENTITY, "project": PROJECT, "run_id": "c", "state": "crashed"}).ok
    run = run_field(emulator, "id state heartbeatAt", "c")
    assert run["state"] == "crashed" and (run["heartbeatAt"] != "2026-01-01T00:00:00") == moves
    # The mutations never move it, in either case.
    emulator.store.touch_heartbeat(ENTITY, PROJECT, "c", when=JAN_1)
    gql(emulator, 'mutation($id: ID!) { updateRunState(input: {id: $id, state: "failed"}) { success } }', id=run["id"])
    gql(emulator, "mutation($id: ID!) { stopRun(input: {id: $id}) { success } }", id=run["id"])
    assert run_field(emulator, "state heartbeatAt", "c") == {"state": "failed", "heartbeatAt": "2026-01-01T00:00:00"}


# -- the command line -----------------------------------------------------------------------------
def test_cli_profile_flags_start_a_server_with_those_profiles(tmp_path):
    from run_pipeline.emulator.sample import generate

    from .test_cli import CLI, KEY, first_line

    generate(tmp_path / "ds", projects=1, runs=2, steps=30)
    proc = subprocess.Popen(CLI + ["emulator", "--profile", "parquet-only", "--profile", "viewer-null", "--port", "0",
                                   "--dataset", str(tmp_path / "ds"), "--api-key", KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = first_line(proc.stdout, timeout=30).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", base), base
        r = requests.post(f"{base}/graphql", json={"query": "{ viewer { id } }"}, auth=("api", "x" * 40), timeout=10)
        assert r.status_code == 200 and r.json() == {"data": {"viewer": None}}
        r = requests.post(f"{base}/_control/profile", json={"profiles": []}, auth=("api", KEY), timeout=10)
        assert r.json()["profiles"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("args, message", [
    (["--profile", "parquet-only", "--profile", "fast"],
     "unknown emulator profile 'fast'; known profiles: parquet-only, delayed-export, exclusive-maxstep, empty-pages, "
     "viewer-null, lagging-filters, crash-no-heartbeat"),
    (["--profile-option", "export_delay_seconds=soon"], "--profile-option 'export_delay_seconds=soon': expected NAME=SECONDS"),
])
def test_cli_bad_profile_exits_2_with_one_line(args, message):
    from .test_cli import run_cli

    done = run_cli("emulator", "--port", "0", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"run-pipeline: error: {message}\n"
