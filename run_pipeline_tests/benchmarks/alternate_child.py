"""The exporting side of `alternate.py`: run as a script, so that the `run_pipeline` it imports
is the one first on `PYTHONPATH` (another checkout, with `--against`). Reads one line per
export from stdin, answers each with one JSON line on stdout: its wall and CPU seconds, and the
directory of the `run_pipeline` package it ran."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from pathlib import Path


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    for dotted, value in spec["settings"].items():
        module, _, name = dotted.rpartition(".")
        setattr(importlib.import_module(module), name, value)
    import run_pipeline
    from run_pipeline.client import Api
    from run_pipeline.discovery import discover_runs
    from run_pipeline.pool import export_runs
    from run_pipeline.warehouse import Warehouse

    api = Api(api_key=spec["api_key"], base_url=spec["base_url"])
    found = [run for project in spec["projects"] for run in discover_runs(api, spec["entity"], project)]
    out = Path(spec["warehouse"])
    for _ in sys.stdin:
        shutil.rmtree(out, ignore_errors=True)
        warehouse = Warehouse(out)
        wall, cpu = time.perf_counter(), time.process_time()
        outcomes = list(export_runs(api, warehouse, found, full=True))
        warehouse.refresh_catalog()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        failed = [o.error for o in outcomes if o.result is None]
        if failed:
            raise SystemExit(f"export failed: {failed[0]}")
        print(json.dumps({"wall": wall, "cpu": cpu, "package": str(Path(run_pipeline.__file__).parent)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
