"""`python -m run_pipeline_tests.benchmarks.alternate [--set NAME=VALUE ...] [--against DIR]
[--scenario long-run|messy|wide|many-runs] [--mode live|parquet] [--steps N] [--runs N] [--reps N]`

Compares run_pipeline as it is with a changed one: one or more of its module settings changed
(`--set`; a bare NAME is `run_pipeline.client.history`'s, e.g. `LIVE_DEPTH=1` for the fetching
and parsing threads one page ahead, `READ_AHEAD_MAX_COLUMNS=0` for no Parquet read-ahead; any
other module's setting is named in full, `run_pipeline.warehouse.parquet.ROW_GROUP_BYTES=…`),
and/or the checkout itself (`--against DIR`: the other side imports `run_pipeline` from DIR,
e.g. a `git worktree` of the commit before a change). One scenario's runs, served by the
emulator in this process, are exported by two child processes, one a side, that take turns
`--reps` times each (after one warm-up export each), so the machine's drift between
invocations does not pass for a change in the code. Prints each side's median wall and CPU
seconds (the export in one process, one run at a time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import datasets
from .datasets import ENTITY
from .scenarios import API_KEY

SCENARIOS = ("long-run", "messy", "wide", "many-runs")
CHILD = Path(__file__).with_name("alternate_child.py")


def _setting(item: str) -> tuple[str, int]:
    name, _, value = item.partition("=")
    if not name or not value.lstrip("-").isdigit():
        raise ValueError(f"--set {item!r}: expected NAME=INTEGER, e.g. LIVE_DEPTH=1")
    return (name if "." in name else f"run_pipeline.client.history.{name}"), int(value)


def _check_setting(dotted: str) -> None:
    import importlib

    module, _, name = dotted.rpartition(".")
    try:
        found = hasattr(importlib.import_module(module), name)
    except ImportError:
        found = False
    if not found:
        raise ValueError(f"{module} has no setting {name!r}")


def _dataset(work: Path, args: argparse.Namespace) -> datasets.Dataset:
    if args.scenario == "many-runs":
        return datasets.many_runs(work / "data", dataclasses.replace(datasets.FULL, many_runs=args.runs))
    if args.scenario == "long-run":
        return datasets.single_run(work / "data", args.scenario, "altrun01", steps=args.steps, metrics=50, seed=1)
    return datasets.shaped_run(work / "data", args.scenario, "altrun01", shape=args.scenario, steps=args.steps,
                               seed=1)


def _start(side: str, spec: dict, work: Path, tree: Path | None) -> subprocess.Popen:
    path = work / f"spec-{side}.json"
    path.write_text(json.dumps({**spec, "warehouse": str(work / f"warehouse-{side}")}))
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, str(CHILD), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def _export(child: subprocess.Popen) -> dict:
    child.stdin.write("export\n")
    child.stdin.flush()
    line = child.stdout.readline()
    if not line:
        raise SystemExit(f"the exporting child exited with {child.wait()}")
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m run_pipeline_tests.benchmarks.alternate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="a module setting to change on the changed side (an integer)")
    p.add_argument("--against", type=Path, metavar="DIR",
                   help="the 'as is' side imports run_pipeline from this checkout instead")
    p.add_argument("--scenario", choices=SCENARIOS, default="long-run")
    p.add_argument("--mode", choices=("live", "parquet"), default="parquet")
    p.add_argument("--steps", type=int, default=200_000, help="rows of the one-run scenarios")
    p.add_argument("--runs", type=int, default=60, help="runs of many-runs (2,000 steps each)")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps {args.reps}: at least 1 export a side")
    if not args.settings and args.against is None:
        p.error("name what to compare: --set NAME=VALUE and/or --against DIR")
    if args.against is not None and not (args.against / "run_pipeline" / "__init__.py").is_file():
        p.error(f"--against {args.against}: no run_pipeline package in that directory")
    try:
        settings = dict(_setting(item) for item in args.settings)
        for dotted in settings:
            _check_setting(dotted)
    except ValueError as exc:
        p.error(str(exc))
    from run_pipeline.emulator.server import EmulatorServer

    with tempfile.TemporaryDirectory(prefix="run_pipeline-alternate-") as tmp:
        work = Path(tmp)
        ds = _dataset(work, args)
        server = EmulatorServer(ds.root, api_key=API_KEY, parquet_mode=args.mode)
        server.start()
        children = []
        try:
            datasets.prewarm(server.store)
            spec = {"api_key": API_KEY, "base_url": server.base_url, "entity": ENTITY, "projects": ds.projects}
            children = [_start("as-is", {**spec, "settings": {}}, work, args.against),
                        _start("changed", {**spec, "settings": settings}, work, None)]
            # Warm-up: the emulator's caches and the child's imports (the first export in a
            # process also pays for what a run_pipeline process does once).
            first = [_export(child) for child in children]
            sides: list[list[dict]] = [[], []]
            for _ in range(args.reps):
                for i, child in enumerate(children):
                    sides[i].append(_export(child))
        finally:
            for child in children:
                child.stdin.close()
                child.wait()
            server.stop()
    labels = ["as is", ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in settings.items()) or "changed"]
    print(f"{args.scenario} · {args.mode}, {len(ds.runs)} run(s), {ds.rows:,} rows, {args.reps} exports a side, "
          f"alternating:")
    for label, results in zip(labels, sides):
        walls, cpus = [r["wall"] for r in results], [r["cpu"] for r in results]
        print(f"  {label} ({results[0]['package']}): wall median {statistics.median(walls):.3f} s "
              f"({', '.join(f'{w:.2f}' for w in walls)}), CPU median {statistics.median(cpus):.3f} s")
    print("  first export of each process, not counted above: "
          + ", ".join(f"{label} {r['wall']:.2f} s (CPU {r['cpu']:.2f} s)" for label, r in zip(labels, first)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
