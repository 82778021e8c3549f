"""The real wandb SDK (0.31) is the judge: what it reads through the emulator equals the
dataset on disk, and what it writes lands there."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime

import pytest
import requests

wandb = pytest.importorskip("wandb")

ENTITY = "demo"
PROJECT = "image-classification"


# -- reading the dataset directly from disk (independent of the emulator's store) ------------
def disk_runs(root, project=PROJECT):
    out = {}
    for run_dir in sorted((root / ENTITY / project).iterdir()):
        if run_dir.is_dir() and not run_dir.name.startswith("."):
            out[run_dir.name] = json.loads((run_dir / "run.json").read_text())
    return out


def disk_history(root, run_id, project=PROJECT, name="history.jsonl"):
    path = root / ENTITY / project / run_id / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def same(a, b):
    """Equality that treats NaN as equal to NaN (and 1 == 1.0 as W&B's Go side re-encodes)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def created(meta):
    return datetime.fromisoformat(meta["created_at"].replace("Z", "+00:00"))


def pick_run(root, *, parquet, project=PROJECT):
    """A run served from Parquet (finished, plain columns) or live (running)."""
    for run_id, meta in disk_runs(root, project).items():
        rows = disk_history(root, run_id, project)
        plain = all(not isinstance(v, (dict, list)) for r in rows for v in r.values())
        if len(rows) > 20 and (meta["state"] == "finished" and plain) == parquet and (parquet or meta["state"] == "running"):
            return run_id, meta, rows
    pytest.fail("the sample dataset has no such run: the generator changed")


# -- listing ------------------------------------------------------------------------------
def test_runs_listing_filters_order_and_paging(wandb_api, emulator):
    meta = disk_runs(emulator.dataset_dir)
    finished = sorted((m for m in meta.items() if m[1]["state"] == "finished"), key=lambda kv: created(kv[1]), reverse=True)
    runs = wandb_api.runs(f"{ENTITY}/{PROJECT}", filters={"state": "finished"}, order="-created_at", per_page=2)
    assert len(runs) == len(finished)
    assert [r.id for r in runs] == [rid for rid, _ in finished]
    # Default order is +created_at; every run is listed exactly once across pages.
    all_runs = list(wandb_api.runs(f"{ENTITY}/{PROJECT}", per_page=3))
    assert [r.id for r in all_runs] == [rid for rid, _ in sorted(meta.items(), key=lambda kv: (created(kv[1])))]


def test_runs_complex_filters(wandb_api, emulator):
    meta = disk_runs(emulator.dataset_dir)
    tagged = {rid for rid, m in meta.items() if "baseline" in (m.get("tags") or [])}
    got = {r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", filters={"tags": "baseline"})}
    assert got == tagged
    lr = sorted({m["config"]["lr"] for m in meta.values()})[len(meta) // 2 and 1]
    flt = {"$and": [{"config.lr": {"$gte": lr}}, {"$or": [{"state": "finished"}, {"state": {"$in": ["crashed", "failed"]}}]},
                    {"display_name": {"$regex": "^[a-z]+-[a-z]+-[0-9]+$"}}]}
    expected = {rid for rid, m in meta.items() if m["config"]["lr"] >= lr and m["state"] in ("finished", "crashed", "failed")
                and re.match(r"^[a-z]+-[a-z]+-[0-9]+$", m.get("display_name", ""))}
    assert {r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", filters=flt)} == expected
    loss = {rid: m["summary"].get("train/loss") for rid, m in meta.items() if "train/loss" in m.get("summary", {})}
    ordered = [r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", order="+summary_metrics.train/loss") if r.id in loss]
    assert ordered == sorted(loss, key=lambda rid: (loss[rid], rid)) or [loss[r] for r in ordered] == sorted(loss.values())
    by_cfg = [r.config.get("batch_size") for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", order="-config.batch_size.value")]
    assert by_cfg == sorted(by_cfg, reverse=True)
    since = sorted(created(m) for m in meta.values())[len(meta) // 2].strftime("%Y-%m-%dT%H:%M:%S")
    got = {r.id for r in wandb_api.runs(f"{ENTITY}/{PROJECT}", filters={"createdAt": {"$gt": since}})}
    assert got == {rid for rid, m in meta.items() if created(m).strftime("%Y-%m-%dT%H:%M:%S") > since}
    assert len(wandb_api.runs(f"{ENTITY}/{PROJECT}", filters={"username": {"$exists": True}})) == len(meta)


def test_projects(wandb_api, emulator):
    names = sorted(p.name for p in wandb_api.projects(ENTITY))
    assert names == sorted(p.name for p in (emulator.dataset_dir / ENTITY).iterdir() if p.is_dir())


# -- one run: every attribute of the seed ---------------------------------------------------
def test_run_attributes(wandb_api, emulator):
    run_id, meta, rows = pick_run(emulator.dataset_dir, parquet=True)
    for path in (f"{ENTITY}/{PROJECT}/{run_id}", f"{ENTITY}/{PROJECT}/runs/{run_id}"):
        run = wandb_api.run(path)
        assert run.id == run_id
    assert run.name == meta.get("display_name", run_id)
    assert run.state == meta["state"]
    assert run.tags == meta.get("tags", [])
    assert run.url == f"{emulator.base_url}/{ENTITY}/{PROJECT}/runs/{run_id}"
    assert run.created_at == created(meta).strftime("%Y-%m-%dT%H:%M:%S")
    assert same(run.config, meta["config"])
    assert same(json.loads(json.dumps(run.summary._json_dict)), meta["summary"])
    assert run.system_metrics == meta["system_metrics"]
    assert run.project == PROJECT and run.entity == ENTITY
    assert run.path == [ENTITY, PROJECT, run_id]
    assert run.notes == meta.get("notes")
    assert run.read_only is False
    assert run.user.username == meta["user"]["username"] and run.user.name == meta["user"]["name"]
    assert run.username == ENTITY
    assert run.lastHistoryStep == rows[-1]["_step"]
    assert run.history_keys["lastStep"] == rows[-1]["_step"]
    assert set(run.history_keys["keys"]) == {k for r in rows for k in r}
    assert json.loads(run.json_config)["lr"] == {"value": meta["config"]["lr"], "desc": None}
    assert run.storage_id and run.snake_to_camel("job_type") == "jobType"
    assert run.job_type == meta.get("job_type") and run.group == meta.get("group")
    assert run.heartbeat_at == datetime.fromisoformat(meta["heartbeat_at"].replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S")
    assert run.history_line_count == len(rows)


def test_missing_run_and_project(wandb_api):
    with pytest.raises(Exception, match="(?i)could not find run|not found"):
        wandb_api.run(f"{ENTITY}/{PROJECT}/doesnotexist")
    with pytest.raises(Exception, match="(?i)could not find project|not found"):
        len(wandb_api.runs(f"{ENTITY}/no-such-project"))


# -- history --------------------------------------------------------------------------------
@pytest.mark.parametrize("parquet", [True, False], ids=["parquet", "live"])
def test_scan_history_equals_dataset(wandb_api, emulator, parquet):
    run_id, meta, rows = pick_run(emulator.dataset_dir, parquet=parquet)
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    got = list(run.scan_history(page_size=7))
    assert len(got) == len(rows)
    for want, have in zip(rows, got):
        have = {k: v for k, v in have.items() if v is not None}
        assert same(have, want), (want["_step"], have, want)
    lo, hi = rows[3]["_step"], rows[9]["_step"]
    window = list(run.scan_history(min_step=lo, max_step=hi, page_size=4))
    assert [r["_step"] for r in window] == [r["_step"] for r in rows if lo <= r["_step"] < hi]
    keyed = list(run.scan_history(keys=["eval/loss"], page_size=5))
    want = [(r["_step"], r["eval/loss"]) for r in rows if "eval/loss" in r]
    # The SDK's Parquet path yields every step with null for absent keys; its live path
    # repeats boundary steps (inclusive sampledHistory maxStep). Both carry the same values.
    assert sorted({(r["_step"], r["eval/loss"]) for r in keyed if r.get("eval/loss") is not None}) == want


def test_scan_history_survives_empty_pages(wandb_api, emulator):
    """A run resumed at step 61,010 with gaps wider than a page is read to its end."""
    for project in ("image-classification", "llm-finetune", "rl-agents"):
        for run_id in disk_runs(emulator.dataset_dir, project):
            rows = disk_history(emulator.dataset_dir, run_id, project)
            if rows and rows[0]["_step"] >= 61010:
                run = wandb_api.run(f"{ENTITY}/{project}/{run_id}")
                got = [r["_step"] for r in run.scan_history(page_size=1000)]
                assert got == [r["_step"] for r in rows]
                return
    pytest.fail("no resumed run in the sample dataset")


def test_sampled_history_and_system_stream(wandb_api, emulator):
    run_id, meta, rows = pick_run(emulator.dataset_dir, parquet=True)
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    full = run.history(samples=10_000, pandas=False)
    assert len(full) == len(rows) and same(full[-1], rows[-1])
    sampled = run.history(samples=10, pandas=False)
    assert len(sampled) == 10 and sampled[0]["_step"] == rows[0]["_step"] and sampled[-1]["_step"] == rows[-1]["_step"]
    keyed = run.history(keys=["eval/acc"], samples=1000, pandas=False)
    assert [(r["_step"], r["eval/acc"]) for r in keyed] == [(r["_step"], r["eval/acc"]) for r in rows if "eval/acc" in r]
    events = disk_history(emulator.dataset_dir, run_id, name="system.jsonl")
    system = run.history(stream="system", samples=100_000, pandas=False)
    assert len(system) == len(events) and same(system[0], events[0])
    df = run.history(samples=5)
    assert len(df) == 5 and "_step" in df.columns


def test_nonfinite_and_large_integers(wandb_api, emulator):
    run_id, meta, rows = pick_run(emulator.dataset_dir, parquet=False)
    last = rows[-1]["_step"]
    extra = [{"_step": last + 1, "x": float("nan"), "big": 2**63 - 1}, {"_step": last + 2, "x": float("inf"), "big": -(2**63)},
             {"_step": last + 3, "x": float("-inf"), "nested": {"a": [1, 2, {"b": None}]}}]
    emulator.store.append_history(ENTITY, PROJECT, run_id, extra)
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    got = [r for r in run.scan_history() if r["_step"] > last]
    assert math.isnan(got[0]["x"]) and got[1]["x"] == math.inf and got[2]["x"] == -math.inf
    assert got[0]["big"] == 2**63 - 1 and got[1]["big"] == -(2**63)
    assert got[2]["nested"] == {"a": [1, 2, {"b": None}]}
    assert run.lastHistoryStep == last + 3


# -- files ----------------------------------------------------------------------------------
def test_files_download_and_pattern(wandb_api, emulator, tmp_path):
    for run_id in disk_runs(emulator.dataset_dir):
        files_dir = emulator.dataset_dir / ENTITY / PROJECT / run_id / "files"
        if files_dir.is_dir():
            break
    on_disk = sorted(p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*") if p.is_file())
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    files = run.files(per_page=2)
    assert len(files) == len(on_disk)
    assert sorted(f.name for f in files) == on_disk
    name = on_disk[0]
    f = run.file(name)
    assert f.size == (files_dir / name).stat().st_size
    f.download(root=str(tmp_path), replace=True)
    assert (tmp_path / name).read_bytes() == (files_dir / name).read_bytes()
    pngs = [f.name for f in run.files(pattern="%.png")]
    assert pngs == [n for n in on_disk if n.endswith(".png")]


def test_upload_file(wandb_api, emulator, tmp_path):
    run_id = next(iter(disk_runs(emulator.dataset_dir)))
    src = tmp_path / "up" / "notes.txt"
    src.parent.mkdir()
    src.write_bytes(b"uploaded \x00 bytes")
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    f = run.upload_file(str(src), root=str(tmp_path / "up"))
    assert f.name == "notes.txt" and f.size == len(b"uploaded \x00 bytes")
    assert (emulator.dataset_dir / ENTITY / PROJECT / run_id / "files" / "notes.txt").read_bytes() == b"uploaded \x00 bytes"


# -- writes ---------------------------------------------------------------------------------
def test_update_persists_to_dataset(wandb_api, emulator):
    run_id = next(iter(disk_runs(emulator.dataset_dir)))
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    run.tags = ["checked", "ünïcode"]
    run.name = "renamed-run"
    run.notes = "new notes"
    run.config["lr"] = 0.5
    run.summary["best/eval_acc"] = 0.99
    run.update()
    meta = json.loads((emulator.dataset_dir / ENTITY / PROJECT / run_id / "run.json").read_text())
    assert meta["tags"] == ["checked", "ünïcode"] and meta["display_name"] == "renamed-run"
    assert meta["notes"] == "new notes" and meta["config"]["lr"] == 0.5
    assert meta["summary"]["best/eval_acc"] == 0.99
    again = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    assert again.name == "renamed-run" and again.config["lr"] == 0.5 and again.summary["best/eval_acc"] == 0.99


def test_create_and_delete(wandb_api, emulator):
    from wandb.apis.public import Run

    run = Run.create(wandb_api, run_id="newrun01", project="fresh-project", entity=ENTITY)
    assert run.id == "newrun01"
    run_dir = emulator.dataset_dir / ENTITY / "fresh-project" / "newrun01"
    assert json.loads((run_dir / "run.json").read_text())["state"] == "running"
    fetched = wandb_api.run(f"{ENTITY}/fresh-project/newrun01")
    assert fetched.state == "running"
    fetched.delete()
    assert not run_dir.exists()
    wandb_api.flush()
    with pytest.raises(Exception, match="(?i)could not find run"):
        wandb_api.run(f"{ENTITY}/fresh-project/newrun01")


def test_artifacts(wandb_api, emulator):
    ids = list(disk_runs(emulator.dataset_dir))
    producer, consumer = ids[0], ids[1]
    art = emulator.store.artifacts.create(ENTITY, PROJECT, type_name="dataset", collection="mnist", digest="d" * 32,
                                          run_id=producer, description="digits", metadata={"rows": 60000},
                                          created_at="2026-11-02T00:00:00Z")
    logged = list(wandb_api.run(f"{ENTITY}/{PROJECT}/{producer}").logged_artifacts())
    assert [a.name for a in logged] == ["mnist:v0"] and logged[0].metadata == {"rows": 60000}
    artifact = wandb_api.artifact(f"{ENTITY}/{PROJECT}/mnist:latest")
    assert artifact.digest == "d" * 32 and artifact.type == "dataset"
    consumer_run = wandb_api.run(f"{ENTITY}/{PROJECT}/{consumer}")
    consumer_run.use_artifact(artifact)
    assert [a.name for a in consumer_run.used_artifacts()] == ["mnist:v0"]
    assert [r[2] for r in art["used_by"]] == [consumer]
    consumer_run.log_artifact(artifact, aliases=["best"])
    assert "best" in wandb_api.artifact(f"{ENTITY}/{PROJECT}/mnist:v0").aliases
    assert [a.name for a in consumer_run.logged_artifacts()] == ["mnist:v0"]
    stored = json.loads((emulator.dataset_dir / ENTITY / PROJECT / ".artifacts.json").read_text())
    assert stored["artifacts"][0]["aliases"] == ["latest", "best"]


# -- bad input gets what W&B gives; the server survives it ------------------------------------
def test_bad_key_is_401(emulator):
    r = requests.post(f"{emulator.base_url}/graphql", json={"query": "{ viewer { id } }"}, auth=("api", "x" * 40))
    assert r.status_code == 401
    with pytest.raises(Exception, match="(?i)401|auth|credential|api key"):
        wandb.Api(api_key="y" * 40, overrides={"base_url": emulator.base_url}, timeout=10).run(f"{ENTITY}/{PROJECT}/x")


def test_malformed_queries_give_graphql_errors(emulator):
    auth = ("api", emulator.api_key)
    for body in ({"query": "{ project(name: "}, {"query": "{ nope }"}, {"query": "{ viewer { id } }", "variables": "x"}):
        r = requests.post(f"{emulator.base_url}/graphql", json=body, auth=auth)
        assert r.status_code == 400 and r.json()["errors"][0]["message"]
    r = requests.post(f"{emulator.base_url}/graphql", data=b"not json", auth=auth)
    assert r.status_code == 400
    r = requests.post(f"{emulator.base_url}/graphql", auth=auth, json={
        "query": "query($f: JSONString) { project(name: \"image-classification\", entityName: \"demo\") { runCount(filters: $f) } }",
        "variables": {"f": json.dumps({"state": {"$bogus": 1}})}})
    assert r.status_code == 200 and "$bogus" in r.json()["errors"][0]["message"]
    assert requests.post(f"{emulator.base_url}/graphql", json={"query": "{ viewer { id } }", "operationName": ""}, auth=auth).ok


def test_strict_json_outer_body(emulator):
    """NaN lives only inside JSON strings: the outer body parses under a strict decoder."""
    run_id, _, rows = pick_run(emulator.dataset_dir, parquet=False)
    emulator.store.append_history(ENTITY, PROJECT, run_id, [{"_step": rows[-1]["_step"] + 1, "v": float("nan")}])
    q = ("query($r: String!) { project(name: \"image-classification\", entityName: \"demo\") { run(name: $r) {"
         " summaryMetrics historyKeys history(samples: 100000) sampledHistory(specs: [\"{\\\"keys\\\": [\\\"v\\\"]}\"])"
         " parquetHistory(liveKeys: [\"_step\", \"v\"]) { liveData } } } }")
    r = requests.post(f"{emulator.base_url}/graphql", json={"query": q, "variables": {"r": run_id}}, auth=("api", emulator.api_key))
    body = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"bare {c} in the outer JSON"))
    run = body["data"]["project"]["run"]
    assert "NaN" in run["history"][-1] and math.isnan(json.loads(run["summaryMetrics"])["v"])
    assert run["sampledHistory"] == [[{"v": "NaN"}]]


def test_parquet_range_requests_need_no_auth(emulator):
    run_id, _, rows = pick_run(emulator.dataset_dir, parquet=True)
    q = "query($r: String!) { project(name: \"image-classification\", entityName: \"demo\") { run(name: $r) { parquetHistory(liveKeys: [\"_step\"]) { parquetUrls liveData } } } }"
    r = requests.post(f"{emulator.base_url}/graphql", json={"query": q, "variables": {"r": run_id}}, auth=("api", emulator.api_key))
    ph = r.json()["data"]["project"]["run"]["parquetHistory"]
    assert ph["liveData"] == [] and len(ph["parquetUrls"]) == 1
    url = ph["parquetUrls"][0]
    whole = requests.get(url)
    assert whole.status_code == 200 and whole.content[:4] == b"PAR1"
    part = requests.get(url, headers={"Range": "bytes=0-0"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 0-0/{len(whole.content)}"
    token = url.split("/storage/")[1].split("/")[0]
    forged = url.replace(token, token[:-4] + ("0000" if not token.endswith("0000") else "1111"))
    assert requests.get(forged).status_code == 403
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(whole.content))
    assert table.num_rows == len(rows) and table.column("_step").to_pylist() == [r["_step"] for r in rows]


def test_running_run_served_live_then_parquet_when_finished(emulator):
    run_id, _, rows = pick_run(emulator.dataset_dir, parquet=False)
    store = emulator.store
    run = store.get_run(ENTITY, PROJECT, run_id)
    assert not store.served_from_parquet(run)
    emulator.store.append_history(ENTITY, PROJECT, run_id, [{"_step": rows[-1]["_step"] + 1, "train/loss": 0.1}])
    store.set_state(ENTITY, PROJECT, run_id, "finished")
    plain = all(not isinstance(v, (dict, list)) for r in rows for v in r.values())
    assert store.served_from_parquet(run) == plain


def test_writes_survive_restart(emulator):
    from run_pipeline.emulator.server import EmulatorServer

    run_id = next(iter(disk_runs(emulator.dataset_dir)))
    emulator.store.append_history(ENTITY, PROJECT, run_id, [{"_step": 10**6, "late": 1}])
    emulator.store.set_state(ENTITY, PROJECT, run_id, "crashed")
    with EmulatorServer(emulator.dataset_dir, api_key=emulator.api_key) as again:
        run = again.store.get_run(ENTITY, PROJECT, run_id)
        assert run.meta["state"] == "crashed" and run.history.last_step == 10**6


def test_control_endpoint(emulator):
    auth = ("api", emulator.api_key)
    run_id, _, rows = pick_run(emulator.dataset_dir, parquet=False)
    url = f"{emulator.base_url}/_control"
    ref = {"entity": ENTITY, "project": PROJECT, "run_id": run_id}
    r = requests.post(f"{url}/append-history", json={**ref, "rows": [{"_step": rows[-1]["_step"] + 5, "m": 1}]}, auth=auth)
    assert r.json() == {"last_step": rows[-1]["_step"] + 5}
    assert requests.post(f"{url}/set-state", json={**ref, "state": "finished"}, auth=auth).ok
    assert emulator.store.get_run(ENTITY, PROJECT, run_id).meta["state"] == "finished"
    bad = requests.post(f"{url}/set-state", json={**ref, "state": "exploded"}, auth=auth)
    assert bad.status_code == 400 and "state must be one of" in bad.json()["errors"][0]["message"]
    assert requests.post(f"{url}/append-history", json={**ref, "rows": [{"m": 1}]}, auth=auth).status_code == 400
    assert requests.post(f"{url}/set-state", json={**ref, "run_id": "nope", "state": "finished"}, auth=auth).status_code == 404
    assert requests.post(f"{url}/set-state", json=ref).status_code == 401


def test_sdk_retries_injected_faults(wandb_api, emulator):
    run_id, meta, rows = pick_run(emulator.dataset_dir, parquet=False)
    emulator.set_faults(seed=3, rates={"429": 0.25, "503": 0.25}, retry_after=0.2)
    run = wandb_api.run(f"{ENTITY}/{PROJECT}/{run_id}")
    got = list(run.scan_history(page_size=10))
    emulator.clear_faults()
    assert run.state == meta["state"] and len(got) == len(rows)
    assert emulator.app.faults.injected.get("429", 0) + emulator.app.faults.injected.get("503", 0) >= 1


def test_rate_limit_headers(emulator):
    emulator.set_rate_limit(3)
    auth = ("api", emulator.api_key)
    responses = [requests.post(f"{emulator.base_url}/graphql", json={"query": "{ viewer { id } }"}, auth=auth) for _ in range(5)]
    assert all("RateLimit-Remaining" in r.headers and "RateLimit-Reset" in r.headers for r in responses)
    assert [r.status_code for r in responses[:3]] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    limited = [r for r in responses[3:] if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)
