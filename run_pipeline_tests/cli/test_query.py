"""`run-pipeline query` as a user runs it: SQL from the argument, a file, standard input or a
named example; tables that fit the terminal; CSV, JSON lines and Parquet; an s3:// warehouse
read with nothing downloaded."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from .helpers import error_line, run_cli


@pytest.fixture(scope="module")
def demo_wh(tmp_path_factory):
    root = tmp_path_factory.mktemp("query") / "wh"
    r = run_cli(["demo", "--warehouse", str(root), "--quiet"])
    assert r.returncode == 0, r.stderr
    return root


def q(demo_wh, *args, **kw):
    return run_cli(["query", "--warehouse", str(demo_wh), *args], **kw)


def test_sql_from_a_file_or_standard_input(demo_wh, tmp_path):
    (tmp_path / "states.sql").write_text("-- runs per state\nSELECT state, count(*) AS n FROM runs\n"
                                         "GROUP BY state ORDER BY n DESC, state;\n")
    from_file = q(demo_wh, "--file", str(tmp_path / "states.sql"), "--format", "csv")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.splitlines() == ["state,n", "finished,25", "running,5", "failed,3", "crashed,2", "killed,1"]
    from_stdin = q(demo_wh, "--file", "-", "--format", "csv", stdin=(tmp_path / "states.sql").read_text())
    assert from_stdin.stdout == from_file.stdout
    both = q(demo_wh, "--file", str(tmp_path / "states.sql"), "SELECT 1")
    assert both.returncode == 2 and error_line(both) == (
        "run-pipeline: error: give only one of (SQL, --file given): the SQL text, --file FILE or --example NAME "
        "(--example list shows them)")
    missing = q(demo_wh, "--file", str(tmp_path / "nope.sql"))
    assert missing.returncode == 2
    assert error_line(missing) == f"run-pipeline: error: --file {tmp_path / 'nope.sql'}: No such file or directory"


def test_examples_are_listed_and_run_with_their_parameters(demo_wh):
    listing = run_cli(["query", "--example", "list"])
    assert listing.returncode == 0
    from run_pipeline.warehouse import EXAMPLES

    for name in EXAMPLES:
        assert f"  {name}\n" in listing.stdout
    assert "$" not in listing.stdout and "parameters: metric=eval/acc maximize=true" in listing.stdout
    best = q(demo_wh, "--example", "best_run_per_project", "--format", "jsonl")
    assert best.returncode == 0, best.stderr
    rows = [json.loads(line) for line in best.stdout.splitlines()]
    assert [(r["project"], r["run_id"]) for r in rows] == [
        ("image-classification", "xnxxgfph"), ("llm-finetune", "as2rab7z"), ("rl-agents", "168habjq")]
    lowest = q(demo_wh, "--example", "best_run_per_project", "--param", "metric=train/loss", "--param",
               "maximize=false", "--format", "jsonl")
    assert lowest.returncode == 0, lowest.stderr
    assert len(lowest.stdout.splitlines()) == 3 and lowest.stdout != best.stdout
    titled = q(demo_wh, "--example", "config_differences", "--param", "max_keys=3")
    assert titled.stdout.splitlines()[0] == ("Pairs of runs in one project whose configs differ in at most 3 keys, "
                                             "fewest first (a key missing from one run counts)")
    wrong = q(demo_wh, "--example", "metric_curve", "--param", "colour=red")
    assert wrong.returncode == 2 and error_line(wrong) == (
        "run-pipeline: error: example metric_curve takes no parameter colour (it takes entity, project, run_id, metric)")


def test_a_wide_table_fits_the_terminal(demo_wh):
    for columns in (60, 100, 160):
        r = q(demo_wh, "SELECT * FROM runs ORDER BY run_id", env={"COLUMNS": str(columns)})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns
        assert lines[-1].startswith("(36 rows") and "…" in r.stdout
    assert lines[-1] == "(36 rows)"  # at 160 every column fits, cut
    r = q(demo_wh, "SELECT * FROM runs ORDER BY run_id", env={"COLUMNS": "60"})
    assert r.stdout.splitlines()[-1].endswith("more columns not shown)")
    narrow = q(demo_wh, "SELECT 1 AS one", env={"COLUMNS": "40"})
    assert narrow.stdout.splitlines() == ["one", "---", "1", "(1 row)"]


def test_csv_json_and_parquet(demo_wh, tmp_path):
    sql = "SELECT run_id, state, history_line_count FROM runs ORDER BY run_id"
    as_csv = list(csv.reader(io.StringIO(q(demo_wh, "--format", "csv", sql).stdout)))
    as_json = json.loads(q(demo_wh, "--format", "json", sql).stdout)
    as_jsonl = [json.loads(line) for line in q(demo_wh, "--format", "jsonl", sql).stdout.splitlines()]
    out = tmp_path / "runs.parquet"
    wrote = q(demo_wh, "--format", "parquet", "--output", str(out), sql)
    assert wrote.returncode == 0 and wrote.stderr == f"wrote 36 rows to {out}\n"
    table = pq.read_table(out).to_pylist()
    assert as_json == as_jsonl == table
    assert as_csv[0] == ["run_id", "state", "history_line_count"]
    assert [[r["run_id"], r["state"], str(r["history_line_count"])] for r in table] == as_csv[1:]
    no_output = q(demo_wh, "--format", "parquet", sql)
    assert no_output.returncode == 2
    assert error_line(no_output) == "run-pipeline: error: --format parquet writes a file: add --output FILE"


def test_an_s3_warehouse_is_queried_offline(s3, s3_endpoint):
    from run_pipeline.warehouse import Warehouse

    from ..warehouse.helpers import batch, make_run

    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    wh.export_run(make_run("team", "proj", "run1"), [batch([0, 1, 2], {"loss": [3.0, 2.0, 1.0]})])
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{s3_endpoint}"}
    r = run_cli(["query", "--warehouse", f"s3://{bucket}/wh", "--format", "csv",
                 "SELECT run_id, count(*) AS n, sum(loss) AS total FROM history GROUP BY run_id"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["run_id,n,total", "run1,3,6.0"]
