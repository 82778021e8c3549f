"""`Api`/`Run` against the emulator on loopback: every attribute and method, with writes read
back through the server."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest

from run_pipeline.client import (
    Api,
    Artifact,
    File,
    RetryPolicy,
    Run,
    User,
    WandbNotFoundError,
)

from .conftest import norm


def fresh(emulator, **kw) -> Api:
    return Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={},
               retry=RetryPolicy(budget=30.0, backoff_base=0.1), **kw)


# -- attributes -----------------------------------------------------------------------------


def test_every_attribute_matches_the_dataset(api, dataset, emulator):
    assert len(dataset) >= 30
    for d in dataset:
        run = api.run(d.path)
        meta = d.meta
        history = d.history()
        assert run.id == d.run_id
        assert run.entity == d.entity and run.project == d.project
        assert run.name == meta["display_name"] == run.display_name
        assert run.state == meta["state"]
        assert run.tags == meta.get("tags", [])
        assert run.notes == meta.get("notes")
        assert run.description == meta.get("description", meta.get("notes"))
        assert run.group == meta.get("group") and run.job_type == meta.get("job_type")
        assert run.config == meta["config"]
        assert norm(dict(run.summary)) == norm(meta["summary"])
        assert run.summary_metrics == dict(run.summary)
        assert run.system_metrics == meta.get("system_metrics", {})
        assert run.created_at == meta["created_at"].rstrip("Z")
        assert run.created_at_utc.isoformat() == meta["created_at"].replace("Z", "+00:00")
        assert run.read_only is bool(meta.get("read_only", False))
        assert isinstance(run.user, User) and run.user.username == meta["user"]["username"]
        assert run.user.name == meta["user"]["name"]
        assert run.path == [d.entity, d.project, d.run_id]
        assert run.url == f"{emulator.base_url}/{d.entity}/{d.project}/runs/{d.run_id}"
        assert run.storage_id and run.storage_id != run.id
        assert run.history_keys["lastStep"] == max(r["_step"] for r in history)
        assert run.lastHistoryStep == run.history_keys["lastStep"]
        assert set(run.history_keys["keys"]) >= {"_step", "_runtime"}
        assert run.history_line_count == len(history)  # generic snake_case fallback
        assert run.historyLineCount == len(history)
        assert run.commit == meta.get("commit")
        wrapped = json.loads(run.json_config)
        assert {k: v["value"] for k, v in wrapped.items()} == meta["config"]
        assert all(v["desc"] is None for v in wrapped.values())
        with pytest.warns(DeprecationWarning):
            assert run.username == d.entity
        assert run.snake_to_camel("job_type") == "jobType"
        assert repr(run) == f"<Run {d.path} ({meta['state']})>"
        with pytest.raises(AttributeError):
            run.no_such_attribute  # noqa: B018


def test_path_forms_and_default_entity(api, dataset):
    d = dataset[0]
    forms = [f"{d.entity}/{d.project}/{d.run_id}", f"{d.entity}/{d.project}/runs/{d.run_id}",
             f"{d.entity}/{d.project}:{d.run_id}", f"{d.project}/{d.run_id}",
             f"/{d.entity}/{d.project}/runs/{d.run_id}/"]
    for form in forms:
        run = api.run(form)
        assert (run.entity, run.project, run.id) == (d.entity, d.project, d.run_id), form
    assert api.default_entity == "demo"
    assert api.viewer.entity == "demo"


def test_bare_run_id_uses_default_project(emulator, dataset):
    d = dataset[0]
    with fresh(emulator, project=d.project) as api:
        assert api.run(d.run_id).storage_id == api.run(d.path).storage_id


def test_missing_run_and_project_are_not_found_naming_the_path(api):
    with pytest.raises(WandbNotFoundError, match="demo/llm-finetune/nope1234"):
        api.run("demo/llm-finetune/nope1234")
    with pytest.raises(WandbNotFoundError, match="demo/no-such-project"):
        len(api.runs("demo/no-such-project"))
    with pytest.raises(WandbNotFoundError):
        api.project("no-such-project")


def test_load_force_refreshes(api, showcase, emulator):
    run = api.run(showcase.path)
    emulator.store.set_state(showcase.entity, showcase.project, showcase.run_id, "crashed")
    assert run.state == showcase.meta["state"]
    assert run.load()["state"] == showcase.meta["state"]  # cached without force
    assert run.load(force=True)["state"] == "crashed"
    assert run.state == "crashed"


def test_run_constructor_loads_when_given_no_attrs(api, showcase):
    run = Run(api, showcase.entity, showcase.project, showcase.run_id)
    assert run.config == showcase.meta["config"]
    with pytest.raises(WandbNotFoundError):
        Run(api, showcase.entity, showcase.project, "missing0")


# -- listing ------------------------------------------------------------------------------------


def test_runs_pages_without_a_query_per_run(api, dataset, emulator):
    project = "llm-finetune"
    expected = [d for d in dataset if d.project == project]
    before = api._transport.stats["requests"]
    runs = api.runs(f"demo/{project}", per_page=2)
    seen = []
    for run in runs:
        seen.append(run.id)
        assert isinstance(run.config, dict) and isinstance(run.system_metrics, dict)
        assert "_step" in run.summary and run.history_keys["lastStep"] >= 0
    requests = api._transport.stats["requests"] - before
    assert sorted(seen) == sorted(d.run_id for d in expected)
    assert len(seen) == len(set(seen))
    assert len(runs) == len(expected)
    # One request per page (+1 for the default-entity lookup only if it was needed: it wasn't);
    # a server that answers every other page empty (W&B can) costs one more request per page.
    pages = -(-len(expected) // 2)
    assert requests == (2 * pages if "empty-pages" in emulator.profiles else pages)


def test_runs_order_indexing_and_len(api, dataset):
    expected = sorted((d for d in dataset if d.project == "rl-agents"),
                      key=lambda d: d.meta["created_at"])
    asc = api.runs("demo/rl-agents", per_page=3)
    assert [r.id for r in asc] == [d.run_id for d in expected]
    desc = api.runs("demo/rl-agents", order="-created_at", per_page=2)
    assert desc[0].id == expected[-1].run_id
    assert desc[-1].id == expected[0].run_id
    assert [r.id for r in desc[1:3]] == [d.run_id for d in expected[::-1][1:3]]
    assert len(desc) == len(expected)
    assert api.runs("rl-agents").entity == "demo"


def test_runs_filters(api, dataset):
    finished = {d.run_id for d in dataset if d.project == "image-classification"
                and d.meta["state"] == "finished"}
    runs = api.runs("demo/image-classification", filters={"state": "finished"}, per_page=2)
    assert {r.id for r in runs} == finished and len(runs) == len(finished)

    tagged = {d.run_id for d in dataset if d.project == "image-classification"
              and {"prod", "sweep"} & set(d.meta.get("tags", []))}
    runs = api.runs("demo/image-classification", filters={"tags": {"$in": ["prod", "sweep"]}})
    assert {r.id for r in runs} == tagged

    lr = sorted(d.meta["config"]["lr"] for d in dataset if d.project == "llm-finetune")[3]
    big_lr = {d.run_id for d in dataset if d.project == "llm-finetune"
              and d.meta["config"]["lr"] > lr}
    runs = api.runs("demo/llm-finetune",
                    filters={"$and": [{"config.lr": {"$gt": lr}}, {"state": {"$ne": "nope"}}]})
    assert {r.id for r in runs} == big_lr
    assert len(api.runs("demo/llm-finetune", filters={"state": "no-such-state"})) == 0
    assert list(api.runs("demo/llm-finetune", filters={"state": "no-such-state"})) == []


def test_projects_and_project(api, dataset):
    names = sorted({d.project for d in dataset})
    assert sorted(p.name for p in api.projects()) == names
    assert sorted(p.name for p in api.projects("demo", per_page=1)) == names
    project = api.project("llm-finetune")
    assert project.name == "llm-finetune" and project.entity == "demo"
    assert project.run_count == len([d for d in dataset if d.project == "llm-finetune"])
    assert len(project.runs()) == project.run_count


# -- writes -------------------------------------------------------------------------------------


def test_update_persists_metadata_config_and_summary(api, showcase, emulator):
    run = api.run(showcase.path)
    run.tags = ["reviewed", "prod"]
    run.name = "renamed-run"
    run.notes = "new notes"
    run.description = "new description"
    run.group = "group-x"
    run.job_type = "eval"
    run.config["lr"] = 0.5
    run.config["new_key"] = {"nested": [1, 2]}
    run.summary["best/eval_acc"] = 0.999
    run.summary["added"] = "yes"
    del run.summary["phase"]
    run.update()

    again = fresh(emulator).run(showcase.path)
    assert again.tags == ["reviewed", "prod"]
    assert again.name == "renamed-run"
    assert again.notes == "new notes" and again.description == "new description"
    assert again.group == "group-x" and again.job_type == "eval"
    assert again.config["lr"] == 0.5 and again.config["new_key"] == {"nested": [1, 2]}
    assert again.config["batch_size"] == showcase.meta["config"]["batch_size"]
    assert again.summary["best/eval_acc"] == 0.999 and again.summary["added"] == "yes"
    assert "phase" not in again.summary
    assert again.summary["_step"] == showcase.meta["summary"]["_step"]


def test_summary_update_persists_at_once_and_save_is_update(api, dataset, emulator):
    d = dataset[3]
    run = api.run(d.path)
    run.summary.update({"acc": 0.75, "nan": float("nan")})
    again = fresh(emulator).run(d.path)
    assert again.summary["acc"] == 0.75
    assert again.summary["nan"] != again.summary["nan"]
    run.notes = "saved"
    run.save()
    assert fresh(emulator).run(d.path).notes == "saved"


def test_create_and_delete(api, emulator):
    run = Run.create(api, run_id="newrun01", project="fresh-project")
    assert (run.id, run.project, run.entity, run.state) == ("newrun01", "fresh-project", "demo",
                                                            "running")
    assert run.config == {} and dict(run.summary) == {}
    assert run.lastHistoryStep == -1
    assert list(run.iter_history_batches()) == [] and list(run.scan_history()) == []
    assert list(run.iter_system_metrics_batches()) == []
    fetched = api.run("demo/fresh-project/newrun01")
    assert fetched.state == "running" and fetched.storage_id == run.storage_id
    pending = Run.create(api, project="fresh-project", state="pending")
    assert len(pending.id) == 8 and api.run(f"demo/fresh-project/{pending.id}").state == "pending"
    fetched.delete()
    with pytest.raises(WandbNotFoundError):
        api.run("demo/fresh-project/newrun01")
    pending.delete(delete_artifacts=True)
    with pytest.raises(WandbNotFoundError):
        api.run(pending._path_str)


def test_update_state(api, dataset):
    d = next(d for d in dataset if d.meta["state"] == "running")
    run = api.run(d.path)
    assert run.update_state("finished")
    assert api.run(d.path).state == "finished"
    run.wait_until_finished(poll_seconds=0.01, timeout=5)


# -- files --------------------------------------------------------------------------------------


def _disk_files(d) -> dict[str, Path]:
    root = d.dir / "files"
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def test_files_listing_download_and_metadata(api, dataset, tmp_path):
    d = max(dataset, key=lambda d: len(_disk_files(d)))
    disk = _disk_files(d)
    assert len(disk) >= 2
    run = api.run(d.path)
    files = run.files(per_page=1)
    assert len(files) == len(disk)
    assert sorted(f.name for f in files) == sorted(disk)
    for f in run.files():
        content = disk[f.name].read_bytes()
        assert isinstance(f, File) and f.size == len(content)
        assert f.md5 == base64.b64encode(hashlib.md5(content).digest()).decode()
        assert f.mimetype and f.updated_at and f.id and f.direct_url
        with f.download(tmp_path) as fh:
            assert Path(fh.name).read_bytes() == content
        assert f.read_bytes() == content
        with pytest.raises(ValueError):
            f.download(tmp_path)
        f.download(tmp_path, exist_ok=True).close()
        f.download(tmp_path, replace=True).close()
    name = sorted(disk)[0]
    assert run.file(name).name == name
    suffix = name.rsplit(".", 1)[-1]
    assert sorted(f.name for f in run.files(pattern=f"%.{suffix}")) == sorted(
        n for n in disk if n.endswith(f".{suffix}"))
    assert [f.name for f in run.files(names=[name])] == [name]


def test_upload_and_delete_file(api, showcase, tmp_path, emulator):
    (tmp_path / "sub").mkdir()
    src = tmp_path / "sub" / "notes.txt"
    src.write_bytes(b"hello from the client\n" * 100)
    run = api.run(showcase.path)
    uploaded = run.upload_file(str(src), root=str(tmp_path))
    assert uploaded.name == "sub/notes.txt" and uploaded.size == src.stat().st_size
    again = fresh(emulator).run(showcase.path)
    assert again.file("sub/notes.txt").read_bytes() == src.read_bytes()
    assert (showcase.dir / "files" / "sub" / "notes.txt").read_bytes() == src.read_bytes()
    count = len(again.files())
    again.file("sub/notes.txt").delete()
    assert len(fresh(emulator).run(showcase.path).files()) == count - 1


# -- history (sampled) and scan ------------------------------------------------------------------


def test_history_sampled_pandas_keys_and_system(api, showcase):
    run = api.run(showcase.path)
    rows = showcase.history()
    sampled = run.history(samples=10, pandas=False)
    assert 0 < len(sampled) <= 10
    steps = {r["_step"] for r in rows}
    assert all(r["_step"] in steps for r in sampled)
    df = run.history()
    assert isinstance(df, pd.DataFrame) and len(df) == min(500, len(rows))
    assert "train/loss" in df.columns
    keyed = run.history(keys=["eval/loss"], pandas=False, samples=1000)
    expected = [{"_step": r["_step"], "eval/loss": r["eval/loss"]}
                for r in rows if "eval/loss" in r]
    assert norm(keyed) == norm(expected)
    system = run.history(stream="system", pandas=False, samples=100_000)
    assert norm(system) == norm(showcase.system())
    with pytest.raises(ValueError):
        run.history(keys=["a"], stream="system")


def test_scan_history_equals_dataset_and_keeps_wandb_meaning(api, showcase):
    run = api.run(showcase.path)
    rows = showcase.history()
    assert norm(list(run.scan_history(page_size=37))) == norm(rows)
    keyed = list(run.scan_history(keys=["eval/loss", "train/loss"], page_size=50))
    expected = [{"_step": r["_step"], "eval/loss": r["eval/loss"], "train/loss": r["train/loss"]}
                for r in rows if "eval/loss" in r and "train/loss" in r]
    assert norm(keyed) == norm(expected)
    assert len(keyed) < len(rows)  # sparse metrics: rows without all keys are not returned
    window = list(run.scan_history(min_step=100, max_step=150))
    assert [r["_step"] for r in window] == [r["_step"] for r in rows if 100 <= r["_step"] < 150]


def test_scan_history_survives_a_late_start(api, late_start):
    rows = late_start.history()
    assert rows[0]["_step"] == 61010
    got = list(api.run(late_start.path).scan_history())
    assert norm(got) == norm(rows)


# -- artifacts ----------------------------------------------------------------------------------


def test_artifacts_log_use_and_list(api, dataset, emulator):
    producer_d, consumer_d = [d for d in dataset if d.project == "llm-finetune"][:2]
    producer = api.run(producer_d.path)
    draft = Artifact("tokenizer", "model", description="bpe", metadata={"vocab": 32000})
    assert draft.is_draft()
    logged = producer.log_artifact(draft, aliases=["best"])
    assert not logged.is_draft()
    assert (logged.name, logged.type, logged.version) == ("tokenizer:v0", "model", "v0")
    assert logged.metadata == {"vocab": 32000} and logged.description == "bpe"
    assert "best" in logged.aliases and logged.digest == draft.digest
    assert logged.entity == "demo" and logged.project == "llm-finetune"
    assert [a.name for a in producer.logged_artifacts()] == ["tokenizer:v0"]
    assert len(producer.logged_artifacts(per_page=1)) == 1

    fetched = api.artifact("demo/llm-finetune/tokenizer:best")
    assert fetched.id == logged.id and fetched.qualified_name == "demo/llm-finetune/tokenizer:v0"
    assert api.artifact("llm-finetune/tokenizer", type="model").id == logged.id
    with pytest.raises(ValueError):
        api.artifact("llm-finetune/tokenizer", type="dataset")
    with pytest.raises(WandbNotFoundError):
        api.artifact("demo/llm-finetune/nothing:v0")

    consumer = api.run(consumer_d.path)
    assert consumer.use_artifact(fetched) is fetched
    assert [a.name for a in consumer.used_artifacts()] == ["tokenizer:v0"]
    with pytest.raises(ValueError):
        consumer.use_artifact(draft)

    again = consumer.log_artifact(fetched, aliases=["prod"])  # same digest: same version
    assert again.id == logged.id and "prod" in again.aliases
    other = api.run(next(d for d in dataset if d.project == "rl-agents").path)
    with pytest.raises(ValueError):
        other.log_artifact(fetched)


def test_quoted_path_and_url_for_odd_ids(api):
    run = Run.create(api, run_id="odd-id_1", project="p q")
    assert run.path == ["demo", urllib.parse.quote("p q", safe=""), "odd-id_1"]
    assert run.url.endswith("/demo/p%20q/runs/odd-id_1")


def test_history_without_pandas_says_how_to_get_it(api, dataset, monkeypatch):
    import sys

    run = api.run(dataset[0].path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as in a plain install: pandas absent
    with pytest.raises(ImportError, match=r"pip install 'run_pipeline\[pandas\]'"):
        run.history(samples=5)
    assert len(run.history(samples=5, pandas=False)) <= 5
