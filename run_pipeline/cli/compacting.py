"""`run-pipeline compact`: pack finished runs' long-form metrics into a few files per project."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import config
from .codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_WAREHOUSE, CliError
from .exporting import open_warehouse


def cmd_compact(args: argparse.Namespace) -> int:
    from run_pipeline.warehouse import WarehouseError

    root, source = config.warehouse_root(args.warehouse)
    if "://" not in root and not os.path.isdir(root):
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) does not exist: nothing to compact")
    warehouse = open_warehouse(root, source)
    started = time.perf_counter()
    try:
        known = warehouse.projects()
        entity = args.entity or config.env("WANDB_ENTITY")
        if entity is not None and not any(e == entity for e, _ in known):
            raise CliError(EXIT_NOT_FOUND, f"warehouse {root} holds no run of entity {entity!r}"
                                       + _known([f"{e}" for e in sorted({e for e, _ in known})]))
        if args.project:
            there = {p for e, p in known if entity is None or e == entity}
            missing = [p for p in args.project if p not in there]
            if missing:
                raise CliError(EXIT_NOT_FOUND, f"warehouse {root} holds no run of project "
                                           f"{', '.join(repr(p) for p in missing)}" + _known(sorted(there)))
        results = warehouse.compact(entity, args.project, min_runs=args.min_runs)
    except WarehouseError as exc:
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}): {exc}") from None
    for result in results:
        print(result.describe())
    runs, files = sum(r.runs for r in results), sum(len(r.packs) for r in results)
    print(f"packed {runs:,} runs into {files} file{'s' if files != 1 else ''} over {len(results)} "
          f"project{'s' if len(results) != 1 else ''} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return EXIT_OK


def _known(names: list[str]) -> str:
    return f" (it holds: {', '.join(names)})" if names else " (it holds no run)"
