"""`run-pipeline prune`: remove the files of runs deleted on the server before a time, and on
request their Dagster partitions."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from . import config
from .codes import EXIT_OK, EXIT_USAGE, EXIT_WAREHOUSE, CliError


def deleted_before(text: str) -> datetime:
    """An ISO 8601 date or time (UTC unless it carries an offset)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def cmd_prune(args: argparse.Namespace) -> int:
    from run_pipeline.warehouse import Warehouse, WarehouseError

    root, source = config.warehouse_root(args.warehouse)
    before: datetime = args.deleted_before
    try:
        warehouse = Warehouse(root)
        marked = [(key, when) for key, when in warehouse.deleted_runs() if when < before]
        if args.dry_run:
            for key, when in marked:
                print(f"would remove {key.path} (deleted {when:%Y-%m-%d %H:%M} UTC)")
            return EXIT_OK
        removed = warehouse.prune(before)
    except WarehouseError as exc:
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}): {exc}") from None
    for key in removed:
        print(f"removed {key.path}")
    print(f"removed {len(removed)} runs deleted on the server before {before.isoformat()}", file=sys.stderr)
    if args.dagster_partitions and removed:
        remove_partitions(removed)
    return EXIT_OK


def remove_partitions(removed) -> None:
    """Delete the removed runs' partitions from the Dagster instance in $DAGSTER_HOME."""
    if not os.environ.get("DAGSTER_HOME"):
        raise CliError(EXIT_USAGE, "--dagster-partitions needs DAGSTER_HOME (the Dagster instance to change)")
    import dagster as dg

    from run_pipeline.defs.partitions import encode_partition_key
    from run_pipeline.settings import RUNS_PARTITIONS

    with dg.DagsterInstance.get() as instance:
        existing = set(instance.get_dynamic_partitions(RUNS_PARTITIONS))
        keys = [encode_partition_key(k) for k in removed]
        for key in keys:
            if key in existing:
                instance.delete_dynamic_partition(RUNS_PARTITIONS, key)
    print(f"removed {sum(k in existing for k in keys)} Dagster partitions", file=sys.stderr)
