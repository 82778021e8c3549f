"""`python -m run_pipeline_tests.benchmarks.alternate --set NAME=VALUE [--set ...]
[--scenario long-run|messy|wide] [--mode live|parquet] [--steps N] [--reps N]`

Compares run_pipeline as it is with one or more of its module settings changed
(`run_pipeline.client.history`'s, e.g. `LIVE_DEPTH=1` for the fetching and parsing threads one
page ahead, `READ_AHEAD_MAX_COLUMNS=0` for no Parquet read-ahead): one scenario's run, served by
the emulator in this process, exported in one child process that alternates the two sides
`--reps` times each (after one warm-up export). Separate invocations compare the machine's
moods as much as the code; alternating in one process compares the code. Prints each side's
median wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import datasets
from .datasets import ENTITY
from .scenarios import API_KEY

SHAPES = {"long-run": None, "messy": "messy", "wide": "wide"}


def _child(spec: dict) -> dict:
    import run_pipeline.client.history as history
    from run_pipeline.client import Api
    from run_pipeline.discovery import discover_runs
    from run_pipeline.pool import export_runs
    from run_pipeline.warehouse import Warehouse

    api = Api(api_key=spec["api_key"], base_url=spec["base_url"])
    found = discover_runs(api, ENTITY, spec["project"])
    current = {name: getattr(history, name) for name in spec["settings"]}
    sides: dict[str, list[tuple[float, float]]] = {"as is": [], "changed": []}
    for i in range(2 * spec["reps"] + 1):
        side = "changed" if i % 2 else "as is"
        for name, value in (spec["settings"] if side == "changed" else current).items():
            setattr(history, name, value)
        out = Path(spec["work"]) / "warehouse"
        shutil.rmtree(out, ignore_errors=True)
        warehouse = Warehouse(out)
        wall, cpu = time.perf_counter(), time.process_time()
        outcomes = list(export_runs(api, warehouse, found, full=True))
        warehouse.refresh_catalog()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        failed = [o.error for o in outcomes if o.result is None]
        if failed:
            raise SystemExit(f"export failed: {failed[0]}")
        if i:  # the first export warms the emulator's caches and this process's imports
            sides[side].append((wall, cpu))
    return sides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m run_pipeline_tests.benchmarks.alternate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of run_pipeline.client.history to change (an integer)")
    p.add_argument("--scenario", choices=SHAPES, default="long-run")
    p.add_argument("--mode", choices=("live", "parquet"), default="parquet")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        Path(spec["result"]).write_text(json.dumps(_child(spec)))
        return 0
    if not args.settings:
        p.error("name at least one setting to change: --set NAME=VALUE")
    settings = {}
    for item in args.settings:
        name, _, value = item.partition("=")
        if not name or not value.lstrip("-").isdigit():
            p.error(f"--set {item!r}: expected NAME=INTEGER, e.g. LIVE_DEPTH=1")
        settings[name] = int(value)
    import run_pipeline.client.history as history

    unknown = [n for n in settings if not hasattr(history, n)]
    if unknown:
        p.error(f"run_pipeline.client.history has no setting {unknown[0]!r}")
    from run_pipeline.emulator.server import EmulatorServer

    with tempfile.TemporaryDirectory(prefix="run_pipeline-alternate-") as tmp:
        work = Path(tmp)
        shape = SHAPES[args.scenario]
        if shape is None:
            ds = datasets.single_run(work / "data", args.scenario, "altrun01", steps=args.steps, metrics=50, seed=1)
        else:
            ds = datasets.shaped_run(work / "data", args.scenario, "altrun01", shape=shape, steps=args.steps, seed=1)
        server = EmulatorServer(ds.root, api_key=API_KEY, parquet_mode=args.mode)
        server.start()
        try:
            datasets.prewarm(server.store)
            spec = {"api_key": API_KEY, "base_url": server.base_url, "project": args.scenario, "reps": args.reps,
                    "settings": settings, "work": str(work), "result": str(work / "result.json")}
            (work / "spec.json").write_text(json.dumps(spec))
            subprocess.run([sys.executable, "-m", "run_pipeline_tests.benchmarks.alternate",
                            "--child", str(work / "spec.json")], check=True)
        finally:
            server.stop()
        sides = json.loads((work / "result.json").read_text())
    changed = ", ".join(f"{k}={v}" for k, v in settings.items())
    print(f"{args.scenario} · {args.mode}, {ds.rows:,} rows, {args.reps} exports a side, alternating:")
    for side, label in (("as is", "as is"), ("changed", changed)):
        walls, cpus = [w for w, _ in sides[side]], [c for _, c in sides[side]]
        print(f"  {label}: wall median {statistics.median(walls):.3f} s ({', '.join(f'{w:.2f}' for w in walls)}), "
              f"CPU median {statistics.median(cpus):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
