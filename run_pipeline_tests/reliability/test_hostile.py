"""Hostile input: the hostile corpus (`run-pipeline sample-data --hostile`) exported through the
CLI, Exporter and Dagster is reconciled value by value against the dataset on disk, or refused
with an error naming the run and the reason; nothing lands outside the warehouse root and no
name changes a SQL statement."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from run_pipeline.client import Api, WandbNotFoundError
from run_pipeline.defs.assets import wandb_run_tables
from run_pipeline.defs.partitions import decode_partition_key, encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.discovery import discover_runs
from run_pipeline.emulator.hostile import (
    ENTITY,
    SQL_ENTITY,
    TOO_LONG_RUN_ID,
    TRAVERSAL_PROJECT,
    UNREPRESENTABLE,
    generate_hostile,
)
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.export import Exporter
from run_pipeline.warehouse import TABLES, RunKey, Warehouse, WarehousePathError, view_statements

from ..conftest import TEST_API_KEY
from . import reconcile as rc

CLI = [sys.executable, "-m", "run_pipeline.cli"]


def tree(root: Path) -> dict[str, str]:
    """Relative path → content hash (or "dir") of everything under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_hostile(tmp_path_factory.mktemp("hostile") / "dataset")


@pytest.fixture(scope="module")
def server(corpus):
    with EmulatorServer(corpus.root, api_key=TEST_API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def exported(corpus, server):
    """The whole corpus exported by the CLI (one invocation per entity), from a sandbox whose
    every file is known before and after."""
    base = corpus.root.parent
    for name in ("wh", "cwd", "home", "tmp"):
        (base / name).mkdir()
    before = tree(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_"))}
    env.update(WANDB_API_KEY=server.api_key, HOME=str(base / "home"), TMPDIR=str(base / "tmp"))
    results = {}
    for entity in (ENTITY, SQL_ENTITY):
        projects = sorted({r.project for r in corpus.runs if r.entity == entity})
        args = ["export", "--entity", entity, "--warehouse", str(base / "wh"), "--base-url", server.base_url,
                "--workers", "4", *[a for p in projects for a in ("--project", p)]]
        results[entity] = subprocess.run(CLI + args, capture_output=True, text=True, env=env, cwd=base / "cwd",
                                         timeout=300)
    return {"root": base / "wh", "base": base, "before": before, "after": tree(base), "cli": results}


def stored_runs(corpus):
    return [r for r in corpus.runs if r.refused is None]


def dataset_dir(corpus, run) -> Path:
    return corpus.root / run.entity / run.project / run.run_id


def key(run) -> tuple[str, str, str]:
    return run.entity, run.project, run.run_id


def test_sample_data_hostile_writes_the_same_corpus(corpus, tmp_path):
    out = subprocess.run(CLI + ["sample-data", "--hostile", str(tmp_path / "cli")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{len(corpus.runs)} runs" in out.stdout and "1 must be refused" in out.stdout
    assert tree(tmp_path / "cli") == tree(corpus.root)  # deterministic, and the CLI adds nothing


def test_cli_exports_every_run_and_refuses_the_unstorable_one_by_name(corpus, exported):
    hostile, sql = exported["cli"][ENTITY], exported["cli"][SQL_ENTITY]
    assert sql.returncode == 0, sql.stderr
    assert hostile.returncode == 6, hostile.stderr  # EXIT_PARTIAL: some runs failed
    refused = [r for r in corpus.runs if r.refused]
    assert len(refused) == 1
    errors = hostile.stderr[hostile.stderr.index("runs failed"):]
    assert f"{ENTITY}/long/{TOO_LONG_RUN_ID}" in errors and "too long for a directory name" in errors
    assert errors.count("\n  ") == 1, errors  # exactly one run listed as failed
    exported_runs = set(rc.parquet_files(exported["root"], "runs"))
    assert exported_runs == {key(r) for r in stored_runs(corpus)}


def test_every_history_value_reconciles_through_the_parquet_files(corpus, exported):
    files = rc.parquet_files(exported["root"], "history")
    assert set(files) <= {key(r) for r in stored_runs(corpus)}
    for run in stored_runs(corpus):
        rows = rc.read_jsonl(dataset_dir(corpus, run) / "history.jsonl")
        assert len(rows) == run.history_rows
        expected_types = rc.expected_types(rows)
        got_rows, got_types, _ = rc.warehouse_history(files.get(key(run), []))
        assert got_types == expected_types, run
        assert sum(got_rows.values()) == len(rows), run
        assert got_rows == rc.source_rows(rows, expected_types), run


def test_every_history_value_reconciles_through_duckdb(corpus, exported):
    files = rc.parquet_files(exported["root"], "history")
    with duckdb.connect(str(exported["root"] / "warehouse.duckdb"), read_only=True) as con:
        history = rc.duckdb_history(con)
        assert set(history) == {key(r) for r in stored_runs(corpus) if r.history_rows}
        for run in stored_runs(corpus):
            rows = rc.read_jsonl(dataset_dir(corpus, run) / "history.jsonl")
            types = rc.expected_types(rows)
            _, _, names = rc.warehouse_history(files.get(key(run), []))
            assert rc.view_rows(history.get(key(run), []), names, types) == rc.source_rows(rows, types), run
            assert rc.duckdb_metrics(con, key(run)) == rc.source_metrics(rows, types), run


def test_config_summary_and_run_rows_reconcile(corpus, exported):
    with duckdb.connect(str(exported["root"] / "warehouse.duckdb"), read_only=True) as con:
        for run in stored_runs(corpus):
            meta = json.loads((dataset_dir(corpus, run) / "run.json").read_text(encoding="utf-8"))
            rows = rc.read_jsonl(dataset_dir(corpus, run) / "history.jsonl")
            assert rc.key_values(con, "run_config", key(run)) == rc.expected_key_values(meta["config"]), run
            assert rc.key_values(con, "run_summary", key(run)) == rc.expected_key_values(meta["summary"]), run
            (state, tags, notes, config, summary, line_count, last_step), = con.execute(
                "SELECT state, tags, notes, config, summary, history_line_count, last_step FROM runs "
                "WHERE entity = ? AND project = ? AND run_id = ?", list(key(run))).fetchall()
            assert (state, tags, notes) == (meta["state"], meta["tags"], meta["notes"])
            assert json.loads(config) == rc.json_safe(meta["config"])
            assert json.loads(summary) == rc.json_safe(meta["summary"])
            assert (line_count, last_step) == (len(rows), max((r["_step"] for r in rows), default=-1))
    big = next(r for r in corpus.runs if r.run_id == "bigconf1")
    assert (dataset_dir(corpus, big) / "run.json").stat().st_size >= 5 * 1024 * 1024


def test_nothing_is_written_outside_the_warehouse_root(corpus, exported):
    base, before, after = exported["base"], exported["before"], exported["after"]
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    outside = sorted(p for p in changed if p.split(os.sep)[0] != "wh")
    assert outside == [], outside  # the dataset, cwd, HOME and TMPDIR are untouched
    tables = {*TABLES, "_staging", "warehouse.duckdb", ".warehouse.duckdb.views"}
    for path in (base / "wh").rglob("*"):
        rel = path.relative_to(base / "wh").parts
        assert rel[0] in tables, path
        if rel[0] in TABLES and len(rel) > 1:
            assert [c.split("=", 1)[0] for c in rel[1:4]] == list(rc.IDS)[:len(rel[1:4])], path
            assert len(rel) <= 5, path
    # Every run directory decodes back to a run of the corpus: no name was altered or escaped.
    stored = {key(r) for r in stored_runs(corpus)}
    for table in ("runs", "run_config", "run_summary", "history", "metrics"):
        assert set(rc.parquet_files(base / "wh", table)) <= stored, table
    assert not list((base / "wh" / "_staging").rglob("*.tmp"))


def test_sql_metacharacters_in_names_never_change_a_statement(corpus, exported):
    hostile_names = {n for r in corpus.runs for n in key(r) if set(n) & set("'\";-%")}
    assert len(hostile_names) >= 5
    for sql in view_statements(exported["root"]):
        assert not any(n in sql for n in hostile_names), sql  # names are data, never SQL text
    with duckdb.connect(str(exported["root"] / "warehouse.duckdb"), read_only=True) as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert views == set(TABLES)
        listed = set(con.execute("SELECT entity, project, run_id FROM runs").fetchall())
        assert listed == {key(r) for r in stored_runs(corpus)}  # NFC/NFD and case kept apart
        where = "WHERE entity = ? AND project = ? AND run_id = ?"
        for run in stored_runs(corpus):
            params = list(key(run))
            assert con.execute(f"SELECT count(*) FROM runs {where}", params).fetchone()[0] == 1, run
            assert con.execute(f"SELECT count(*) FROM run_config {where}", params).fetchone()[0] > 0, run
            if set("".join(params)) & set("'\";-%"):  # the wide history view costs ~1 s a query
                assert con.execute(f"SELECT count(*) FROM history {where}", params).fetchone()[0] == run.history_rows
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == len(stored_runs(corpus))


def test_the_exporter_refuses_an_unstorable_run_naming_it(corpus, server, tmp_path):
    with Api(api_key=server.api_key, base_url=server.base_url) as api:
        exporter = Exporter(api, Warehouse(tmp_path / "wh"))
        with pytest.raises(WarehousePathError) as err:
            exporter.export_run(RunKey(ENTITY, "long", TOO_LONG_RUN_ID))
    assert f"run {ENTITY}/long/{TOO_LONG_RUN_ID} cannot be stored" in str(err.value)
    assert "too long for a directory name" in str(err.value)
    assert not [p for p in (tmp_path / "wh").rglob("*") if p.is_file() and "locks" not in p.parts]


def test_paths_no_dataset_can_hold_are_not_found_and_write_nothing(server, tmp_path):
    root = tmp_path / "wh"
    with Api(api_key=server.api_key, base_url=server.base_url) as api:
        exporter = Exporter(api, Warehouse(root))
        for bad in UNREPRESENTABLE:
            for ref in (RunKey(ENTITY, bad, "x"), RunKey(ENTITY, "keys", bad), RunKey(bad, "keys", "keysparq")):
                with pytest.raises(WandbNotFoundError) as err:
                    exporter.export_run(ref)
                assert ref.path in str(err.value)
                assert decode_partition_key(encode_partition_key(ref)) == ref
        with pytest.raises(WandbNotFoundError):
            api.run(f"{ENTITY}/../x")
    assert not [p for p in root.rglob("*") if p.is_file() and "locks" not in p.parts]
    # The warehouse itself keeps such names inside its root even when a source could hold them.
    warehouse = Warehouse(root)
    batch = pa.record_batch({"_step": pa.array([0, 1], pa.int64()), "x": pa.array([1.0, 2.0])})
    for entity, project, run_id in [("../..", "../../etc", "../x"), ("..", ".", "/abs"), ("a/b", "c\\d", "%2e%2e")]:
        warehouse.export_run({"entity": entity, "project": project, "run_id": run_id, "state": "finished"},
                             history=[batch])
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert outside == []
    warehouse.refresh_catalog()
    with warehouse.connect() as con:
        got = set(con.execute("SELECT entity, project, run_id FROM history").fetchall())
    assert got == {("../..", "../../etc", "../x"), ("..", ".", "/abs"), ("a/b", "c\\d", "%2e%2e")}


def test_a_run_deleted_between_listing_and_fetching_is_refused_by_name(tmp_path):
    corpus = generate_hostile(tmp_path / "dataset", wide_keys=10, big_config_bytes=1000)
    with EmulatorServer(corpus.root, api_key=TEST_API_KEY) as server, \
            Api(api_key=server.api_key, base_url=server.base_url) as api:
        exporter = Exporter(api, Warehouse(tmp_path / "wh"))
        found = discover_runs(api, ENTITY, "keys")
        server.store.delete_run(server.store.get_run(ENTITY, "keys", "values01"))
        exported, refused = [], {}
        for f in found:
            try:
                exported.append(exporter.export_run(f.run))
            except WandbNotFoundError as exc:
                refused[f.key.run_id] = str(exc)
        assert list(refused) == ["values01"]
        assert f"{ENTITY}/keys/values01" in refused["values01"] and "not found" in refused["values01"]
        assert sorted(r.key.run_id for r in exported) == sorted(
            f.key.run_id for f in found if f.key.run_id != "values01")
        assert all(r.reconciled for r in exported)
        # Asked for by partition key (Dagster's path), the deleted run is not found either.
        with pytest.raises(WandbNotFoundError, match="values01"):
            exporter.export_run(RunKey(ENTITY, "keys", "values01"))
    written = {k[2] for t in ("runs", "history", "metrics") for k in rc.parquet_files(tmp_path / "wh", t)}
    assert "values01" not in written


def test_rows_logged_below_the_last_exported_step_are_not_lost(tmp_path):
    """A resumed or rewound run logs rows at steps already exported: the next incremental export
    notices the shortfall and fetches the run whole."""
    corpus = generate_hostile(tmp_path / "dataset", wide_keys=10, big_config_bytes=1000)
    run = ("hostile", "keys", "steps001")
    with EmulatorServer(corpus.root, api_key=TEST_API_KEY) as server, \
            Api(api_key=server.api_key, base_url=server.base_url) as api:
        exporter = Exporter(api, Warehouse(tmp_path / "wh"))
        assert exporter.export_run(RunKey(*run)).mode == "full"
        for extra in ([{"_step": 61020, "loss": 1.0}, {"_step": 150001, "loss": 2.0}],  # below and above the last
                      [{"_step": 61021, "loss": 3.0}],                                 # below only
                      [{"_step": 150002, "loss": 4.0}]):                               # above only
            server.store.append_history(*run, extra)
            result = exporter.export_run(RunKey(*run))
            assert result.reconciled, result.describe()
        assert result.mode == "incremental"  # the ordinary case stays incremental
    rows = rc.read_jsonl(corpus.root.joinpath(*run) / "history.jsonl")
    types = rc.expected_types(rows)
    got, _, _ = rc.warehouse_history(rc.parquet_files(tmp_path / "wh", "history")[run])
    assert got == rc.source_rows(rows, types)


DAGSTER_RUNS = [("keys", "values01"), ("keys", "steps001"), ("a'b\"c;--", "'; DROP TABLE runs; --"),
                ("проект 数据 🚀", "rün-ü-🚀"), ("проект 数据 🚀", "rtl\u202eevil"), ("runs", "abcd1234"),
                ("my project", "run with spaces "), (TRAVERSAL_PROJECT, "x..%2F..%2Fetc")]


def test_dagster_partitions_of_hostile_runs_export_faithfully(corpus, server, tmp_path):
    resources = {"wandb": WandbResource(base_url=server.base_url, api_key=server.api_key, entity=ENTITY),
                 "warehouse": WarehouseResource(root=str(tmp_path / "wh"))}
    instance = dg.DagsterInstance.ephemeral()
    refs = [RunKey(ENTITY, p, r) for p, r in DAGSTER_RUNS]
    instance.add_dynamic_partitions(wandb_runs_partitions.name, [encode_partition_key(ref) for ref in refs])
    for ref in refs:
        result = dg.materialize([wandb_run_tables], partition_key=encode_partition_key(ref), resources=resources,
                                instance=instance, raise_on_error=False)
        assert result.success, ref
        assert all(c.passed for c in result.get_asset_check_evaluations() if c.check_name != "steps_unique"), ref
    files = rc.parquet_files(tmp_path / "wh", "history")
    for ref in refs:
        rows = rc.read_jsonl(corpus.root / ref.entity / ref.project / ref.run_id / "history.jsonl")
        types = rc.expected_types(rows)
        got, _, _ = rc.warehouse_history(files[(ref.entity, ref.project, ref.run_id)])
        assert got == rc.source_rows(rows, types), ref
