"""The emulator's on-disk dataset (emulator/dataset.py, emulator/store.py): malformed files are
refused with the file and line named, history is served in step order, writes persist across
a reload, and no name escapes the dataset directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from run_pipeline.emulator.dataset import DatasetError, RowLog
from run_pipeline.emulator.store import Store, safe_component


def write_run(root: Path, run_id: str = "run1", meta: dict | str | None = None, history: str | None = None,
              entity: str = "ent", project: str = "proj") -> Path:
    run_dir = root / entity / project / run_id
    run_dir.mkdir(parents=True)
    if meta is not None:
        text = meta if isinstance(meta, str) else json.dumps(meta)
        (run_dir / "run.json").write_text(text)
    if history is not None:
        (run_dir / "history.jsonl").write_text(history)
    return run_dir


def open_store(root: Path, **kw) -> Store:
    return Store(root, cache_dir=root.parent / "cache", **kw)


# -- malformed run.json -----------------------------------------------------------------------------
@pytest.mark.parametrize("meta, problem", [
    ('{"state": "finished",', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"display_name": "x"}, "'state' must be one of running, finished, crashed, failed, killed"),
    ({"state": "exploded"}, "got 'exploded'"),
    ({"state": "Finished"}, "got 'Finished'"),
    (None, "missing run.json"),
])
def test_malformed_run_json_names_the_file(tmp_path, meta, problem):
    root = tmp_path / "ds"
    write_run(root, "good", {"state": "finished"})
    bad = write_run(root, "bad", meta)
    with pytest.raises(DatasetError) as exc:
        open_store(root)
    assert str(bad / "run.json") in str(exc.value) and problem in str(exc.value)


# -- malformed history.jsonl --------------------------------------------------------------------------
@pytest.mark.parametrize("line, problem", [
    ('{"x": 1}', "'_step' must be an integer, got None"),
    ('{"_step": "3"}', "'_step' must be an integer, got '3'"),
    ('{"_step": 2.5}', "'_step' must be an integer, got 2.5"),
    ('{"_step": true}', "'_step' must be an integer, got True"),
    ('{"_step": null}', "'_step' must be an integer, got None"),
    ("[1, 2]", "not a JSON object"),
    ('{"_step": 4, "x": }', "not a JSON object"),
])
def test_bad_history_line_names_the_file_and_line(tmp_path, line, problem):
    root = tmp_path / "ds"
    run_dir = write_run(root, meta={"state": "finished"}, history='{"_step": 0}\n\n{"_step": 1}\n' + line + "\n")
    store = open_store(root)
    with pytest.raises(DatasetError) as exc:
        len(store.get_run("ent", "proj", "run1").history)
    assert f"{run_dir / 'history.jsonl'}:4: " in str(exc.value)  # blank lines count
    assert problem in str(exc.value)


def test_integral_float_steps_and_nonfinite_values_are_accepted(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"_step": 0, "v": NaN}\n{"_step": 1.0, "v": Infinity}\n{"_step": 2, "v": -Infinity}\n')
    log = RowLog(path)
    rows = log.read_rows(log.window(None, None))
    assert [r["_step"] for r in rows] == [0, 1.0, 2] and log.last_step == 2
    assert math.isnan(rows[0]["v"]) and rows[1]["v"] == math.inf and rows[2]["v"] == -math.inf


def test_integers_beyond_64_bits_stay_exact_and_keep_a_run_off_parquet(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(f'{{"_step": 0, "big": {2**64 + 1}}}\n{{"_step": 1, "big": {-(2**63) - 1}}}\n')
    log = RowLog(path)
    assert [r["big"] for r in log.read_rows(log.window(None, None))] == [2**64 + 1, -(2**63) - 1]
    assert log.keys["big"].kinds == {"other"}  # not "float": served live, never as rounded Parquet


def test_fixing_a_bad_history_file_gives_exactly_its_rows(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"_step": 0}\n{"_step": 1}\n{"oops": 1}\n')
    log = RowLog(path)
    with pytest.raises(DatasetError):
        len(log)
    path.write_text('{"_step": 0}\n{"_step": 1}\n{"_step": 2}\n')
    assert len(log) == 3 and log.last_step == 2
    assert [r["_step"] for r in log.read_rows(log.window(None, None))] == [0, 1, 2]


# -- step order ------------------------------------------------------------------------------------
def test_out_of_order_and_repeated_steps_are_served_in_step_order(tmp_path):
    path = tmp_path / "history.jsonl"
    logged = [{"_step": 3, "v": "a"}, {"_step": 1, "v": "b"}, {"_step": 2, "v": "c"}, {"_step": 1, "v": "d"},
              {"_step": 0, "v": "e"}, {"_step": 3, "v": "f"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in logged))
    log = RowLog(path)
    assert len(log) == 6 and log.last_step == 3
    rows = log.read_rows(log.window(None, None))
    assert [(r["_step"], r["v"]) for r in rows] == [(0, "e"), (1, "b"), (1, "d"), (2, "c"), (3, "a"), (3, "f")]
    assert [r["v"] for r in log.read_rows(log.window(1, 3))] == ["b", "d", "c"]
    assert [r["v"] for r in log.read_rows(log.window(1, 3, inclusive_max=True))] == ["b", "d", "c", "a", "f"]
    assert log.window(4, None) == []
    assert log.history_keys()["lastStep"] == 3


def test_appending_an_earlier_step_reorders(tmp_path):
    log = RowLog(tmp_path / "history.jsonl")
    log.append([{"_step": 5, "v": 1}, {"_step": 6, "v": 2}])
    assert [r["_step"] for r in log.read_rows(log.window(None, None))] == [5, 6]
    log.append([{"_step": 2, "v": 3}])
    assert [r["v"] for r in log.read_rows(log.window(None, None))] == [3, 1, 2]
    assert log.last_step == 6


def test_parquet_export_is_sorted_by_step(tmp_path):
    root = tmp_path / "ds"
    write_run(root, meta={"state": "finished"},
              history='{"_step": 2, "x": 0.5}\n{"_step": 0, "x": 1}\n{"_step": 1, "x": 2.5, "s": "hi"}\n')
    store = open_store(root)
    run = store.get_run("ent", "proj", "run1")
    assert store.served_from_parquet(run)
    table = pq.read_table(store.parquet_export(run))
    assert table.to_pylist() == [{"_step": 0, "x": 1.0, "s": None}, {"_step": 1, "x": 2.5, "s": "hi"},
                                 {"_step": 2, "x": 0.5, "s": None}]


# -- writes persist ----------------------------------------------------------------------------------
def test_appended_history_and_state_survive_a_reload(tmp_path):
    root = tmp_path / "ds"
    store = open_store(root)
    store.create_run("ent", "proj", "live", {"display_name": "live-run", "config": {"lr": 0.1}})
    rows = [{"_step": 0, "loss": 1.0}, {"_step": 1, "loss": math.nan, "tag": "x"}]
    assert store.append_history("ent", "proj", "live", rows) == 1
    store.append_system("ent", "proj", "live", [{"_timestamp": 1.0, "system.cpu": 3.5}])
    store.set_state("ent", "proj", "live", "finished")

    again = open_store(root)
    run = again.get_run("ent", "proj", "live")
    assert run.meta["state"] == "finished" and run.meta["display_name"] == "live-run" and run.config == {"lr": 0.1}
    got = run.history.read_rows(run.history.window(None, None))
    assert got[0] == {"_step": 0, "loss": 1.0} and got[1]["tag"] == "x" and math.isnan(got[1]["loss"])
    assert run.summary["tag"] == "x" and run.summary["_step"] == 1
    assert run.events.read_rows(run.events.window(None, None)) == [{"_timestamp": 1.0, "system.cpu": 3.5}]

    store.reload()  # the same store re-reads the directory too
    assert len(store.get_run("ent", "proj", "live").history) == 2


def test_append_refuses_rows_without_an_integer_step_and_writes_nothing(tmp_path):
    root = tmp_path / "ds"
    store = open_store(root)
    store.create_run("ent", "proj", "r")
    with pytest.raises(ValueError, match="row 1 needs an integer '_step'"):
        store.append_history("ent", "proj", "r", [{"_step": 0}, {"_step": "1"}])
    assert len(open_store(root).get_run("ent", "proj", "r").history) == 0


def test_deleted_run_is_gone_after_reload(tmp_path):
    root = tmp_path / "ds"
    store = open_store(root)
    store.create_run("ent", "proj", "keep")
    store.delete_run(store.create_run("ent", "proj", "drop"))
    assert sorted(r.run_id for r in open_store(root).project_runs("ent", "proj")) == ["keep"]
    # Deletion is soft: the run waits in the project's trash, which is not a run.
    assert sorted(p.name for p in (root / "ent" / "proj").iterdir()) == [".deleted", "keep"]
    assert list(open_store(root).deleted_runs("ent", "proj")) == ["drop"]


# -- names never escape the dataset directory ---------------------------------------------------------
@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "x\x00y"])
def test_safe_component_refuses_escapes(name):
    with pytest.raises(ValueError, match="invalid run name"):
        safe_component(name, "run")


@pytest.mark.parametrize("name", ["ok", "run-1_x", "a.b"])
def test_safe_component_accepts_plain_names(name):
    assert safe_component(name, "run") == name


def test_create_run_refuses_escaping_names(tmp_path):
    root = tmp_path / "ds"
    store = open_store(root)
    for entity, project, run_id in (("ent", "proj", "../evil"), ("ent", "../evil", "r"), ("..", "proj", "r")):
        with pytest.raises(ValueError, match="invalid"):
            store.create_run(entity, project, run_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]
    assert list(root.rglob("*evil*")) == []


@pytest.mark.parametrize("name", ["../run.json", "../../proj/other/run.json", "a/../../x", "/etc/passwd", "", "."])
def test_file_path_refuses_escapes(tmp_path, name):
    store = open_store(tmp_path / "ds")
    run = store.create_run("ent", "proj", "r")
    with pytest.raises(ValueError, match="invalid file name"):
        run.file_path(name)
    with pytest.raises(ValueError, match="invalid file name"):
        store.write_file(run, name, b"x")
    assert json.loads((run.dir / "run.json").read_text())["state"] == "running"


def test_file_path_accepts_nested_names_inside_the_run(tmp_path):
    store = open_store(tmp_path / "ds")
    run = store.create_run("ent", "proj", "r")
    store.write_file(run, "media/images/a.png", b"png")
    store.write_file(run, "logs/../output.log", b"log")
    assert run.list_files() == ["media/images/a.png", "output.log"]
    assert (run.dir / "files" / "media" / "images" / "a.png").read_bytes() == b"png"
