"""`run-pipeline export` and `run-pipeline demo`: check the server, find the runs, export them
(Ctrl-C abandons the runs in flight cleanly) and say what landed."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from run_pipeline.client.auth import display_url

from . import config
from .checks import check_base_url, check_local_warehouse
from .codes import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_WAREHOUSE,
    CliError,
)
from .output import Progress

#: Runs exported at once by `export` and `demo` alike.
DEFAULT_WORKERS = 4
NO_KEY = "no W&B API key: `export WANDB_API_KEY=...` (or put it in .env), or run `wandb login`"


def open_warehouse(root: str, source: str):
    """The warehouse, checked once before any run is fetched: a local root exists (or is
    created) and is writable; an s3:// root answers."""
    from run_pipeline.warehouse import Warehouse, WarehouseError

    if "://" not in root:
        check_local_warehouse(root, source)
        return Warehouse(root)
    try:
        warehouse = Warehouse(root, filesystem=config.pyarrow_s3(config.s3_options()))
        warehouse.root.fs.get_file_info(warehouse.root.base)
    except (OSError, WarehouseError) as exc:
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) is not usable: "
                                       f"{str(exc).splitlines()[0]}") from None
    return warehouse


def make_api(args: argparse.Namespace):
    """(client, where its URL came from): the URL checked and a key found, no request sent."""
    from run_pipeline.client import Api, RetryPolicy, WandbAuthError

    url, source = config.base_url(args.base_url)
    url = check_base_url(url, source)
    retry = RetryPolicy(budget=args.retry_budget) if args.retry_budget is not None else None
    try:
        api = Api(base_url=url, timeout=args.timeout, retry=retry, entity=args.entity or config.env("WANDB_ENTITY"))
    except WandbAuthError:
        raise CliError(EXIT_AUTH, NO_KEY) from None
    return api, source


def check_server(api, source: str, doing: str) -> None:
    """One request that proves the server is W&B and takes the key. `doing` says what the
    export is for, in the message when the server cannot be reached."""
    from run_pipeline.client import (
        WandbAuthError,
        WandbNotFoundError,
        WandbQueryError,
        WandbTransportError,
    )

    shown = display_url(api.base_url)
    try:
        api.viewer  # noqa: B018 - the probe
    except WandbAuthError:
        raise CliError(EXIT_AUTH, f"authentication failed: the W&B server at {shown} refused the API key "
                                  "(`export WANDB_API_KEY=...` with a valid key, or run `wandb login`)") from None
    except (WandbQueryError, WandbNotFoundError) as exc:
        status = getattr(exc, "status", None) or (404 if isinstance(exc, WandbNotFoundError) else None)
        if status and status != 200:
            raise CliError(EXIT_UNREACHABLE, f"the server at {shown} does not look like a W&B server "
                                             f"(HTTP {status})") from None
        raise CliError(EXIT_UNREACHABLE, f"the server at {shown} does not answer like a W&B server: {exc}") from None
    except WandbTransportError as exc:
        raise CliError(EXIT_UNREACHABLE, f"W&B server unreachable while checking it before exporting {doing}: "
                                         f"{exc} (check {source})") from None


def find_runs(api, warehouse, entity: str, projects: list[str],
              args: argparse.Namespace) -> tuple[list, list[str]]:
    """(runs to export, requested run ids that none of the projects has). Every project of
    the entity when `projects` is empty, as the Dagster definitions do. A complete listing
    (no --runs, --state or --since) also brings the exported runs it no longer holds: their
    export checks with the server and marks them deleted when they are gone."""
    from run_pipeline.client import (
        WandbNotFoundError,
        WandbQueryError,
        WandbTransportError,
    )
    from run_pipeline.discovery import discover_runs, vanished_runs

    shown = display_url(api.base_url)
    if not projects:
        try:
            projects = [p.name for p in api.projects(entity)]
        except WandbNotFoundError:
            raise CliError(EXIT_NOT_FOUND, f"entity {entity} not found on {shown} (check --entity or WANDB_ENTITY)") from None
        except WandbTransportError as exc:
            raise CliError(EXIT_UNREACHABLE, f"W&B server unreachable while listing the projects of {entity}: {exc}") from None
        if not projects:
            raise CliError(EXIT_NOT_FOUND, f"entity {entity} has no projects on {shown}")
    targets = []
    for project in projects:
        try:
            api.project(project, entity)
            found = discover_runs(api, entity, project, states=args.state, since=args.since, run_ids=args.runs)
            targets.extend(found)
            if not (args.state or args.since or args.runs):
                targets.extend(vanished_runs(warehouse, entity, project, found))
        except WandbNotFoundError:
            raise CliError(EXIT_NOT_FOUND, f"project {entity}/{project} not found on {shown} "
                                           "(check --entity and --project)") from None
        except WandbTransportError as exc:
            raise CliError(EXIT_UNREACHABLE, f"W&B server unreachable while listing the runs of {entity}/{project}: "
                                             f"{exc}") from None
        except WandbQueryError as exc:  # GraphQL errors or HTTP 400 outside any one run
            raise CliError(EXIT_REFUSED, f"the W&B server at {shown} refused listing the runs of "
                                         f"{entity}/{project}: {exc}") from None
    unknown: list[str] = []
    if args.runs:
        found = {t.key.run_id for t in targets}
        unknown = [r for r in dict.fromkeys(args.runs) if r not in found]
        if len(unknown) == len(set(args.runs)):
            where = ", ".join(f"{entity}/{p}" for p in projects)
            filtered = " (or filtered out by --state/--since)" if args.state or args.since else ""
            raise CliError(EXIT_NOT_FOUND, f"no run {', '.join(unknown)} in {where}{filtered}")
    return targets, unknown


@dataclass
class Tally:
    """What an export did, run by run."""

    total: int
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rows: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def exported(self) -> int:
        return self.new + self.updated + self.unchanged

    def line(self) -> str:
        gone = f", {self.deleted} deleted on the server (kept, marked deleted)" if self.deleted else ""
        return (f"{self.new} new run{'s' if self.new != 1 else ''}, {self.updated} updated, "
                f"{self.unchanged} already up to date{gone} ({self.rows:,} new history rows)")


def export_all(api, warehouse, targets: list, *, full: bool, workers: int, quiet: bool) -> Tally:
    """Export `targets`; Ctrl-C abandons the runs in flight (nothing of them is committed) and
    ends with exit 130 and how to resume."""
    from run_pipeline.pool import export_runs
    from run_pipeline.warehouse import UNCHANGED

    before = {k for k, _ in warehouse.run_states()}
    tally = Tally(len(targets))
    progress = Progress(len(targets), quiet)
    try:
        for outcome in export_runs(api, warehouse, targets, full=full, workers=workers):
            key, result = outcome.key, outcome.result
            if outcome.deleted:
                tally.deleted += 1
                progress.update(key.path, 0, "deleted on the server: its rows stay in the warehouse, marked deleted")
                continue
            if result is None:
                tally.failures[key.path] = outcome.error
                progress.update(key.path, 0, f"FAILED {outcome.error}")
                continue
            tally.rows += result.history_rows_written
            if key not in before:
                tally.new += 1
            elif result.mode == UNCHANGED:
                tally.unchanged += 1
            else:
                tally.updated += 1
            progress.update(key.path, result.history_rows_written, result.describe())
            if not result.reconciled:  # landed, but not all of it: never report that as success
                tally.failures[key.path] = (f"{result.history_rows_total} history rows in the warehouse, "
                                            f"but the server holds {result.source_history_rows}")
    except KeyboardInterrupt:
        progress.close()
        raise CliError(EXIT_INTERRUPTED, f"interrupted: {tally.exported} of {tally.total} runs exported, the runs in "
                                         "flight abandoned (nothing of them is visible); run the same command "
                                         "again to resume") from None
    progress.close()
    return tally


def partial_failure(tally: Tally, unknown: list[str], where: str) -> CliError | None:
    """Exit 6 naming every run that failed or was not found; None when there is none."""
    if not tally.failures and not unknown:
        return None
    missing = f"{len(unknown)} run{'s' if len(unknown) != 1 else ''} not found in {where}: {', '.join(unknown)}"
    if not tally.failures:
        return CliError(EXIT_PARTIAL, f"{missing} (the other {tally.exported} exported)")
    lines = [f"  {path}: {why}" for path, why in sorted(tally.failures.items())]
    if unknown:
        lines.append(f"  and {missing}")
    return CliError(EXIT_PARTIAL, f"{len(tally.failures)} of {tally.total} runs failed (re-running resumes; "
                                  "exported runs are not fetched again):\n" + "\n".join(lines))


def cmd_export(args: argparse.Namespace) -> int:
    projects = args.project or config.csv_list(config.env("WANDB_PROJECT"))
    entity = args.entity or config.env("WANDB_ENTITY")
    doing = (", ".join(f"{entity or '(default entity)'}/{p}" for p in projects) if projects
             else f"every project of {entity or 'the default entity'}")
    api, source = make_api(args)  # the URL and the key, before anything is written
    with api:
        root, where = config.warehouse_root(args.warehouse)
        warehouse = open_warehouse(root, where)  # once, before the first run is fetched
        check_server(api, source, doing)
        entity = api.default_entity
        targets, unknown = find_runs(api, warehouse, entity, projects, args)
        if not args.quiet:
            print(f"{len(targets)} runs to export from {display_url(api.base_url)} into {root}", file=sys.stderr)
            if not targets:
                print("no run matches: nothing to export", file=sys.stderr)
        tally = export_all(api, warehouse, targets, full=args.full, workers=args.workers, quiet=args.quiet)
    if warehouse.root.is_local:
        warehouse.refresh_catalog()
    if not args.quiet:
        print(f"exported {tally.exported} of {tally.total} runs: {tally.line()}", file=sys.stderr)
    error = partial_failure(tally, unknown, ", ".join(f"{entity}/{p}" for p in projects) or f"entity {entity}")
    if error:
        raise error
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from run_pipeline.client import Api
    from run_pipeline.discovery import discover_runs
    from run_pipeline.emulator.server import EmulatorServer

    from .guide import print_guide

    root, source = config.warehouse_root(args.warehouse)
    if "://" in root:
        raise CliError(EXIT_USAGE, f"the demo writes a local warehouse, not {root} ({source}): pass a directory "
                                   "to --warehouse")
    warehouse = open_warehouse(root, source)
    started = time.perf_counter()
    with EmulatorServer() as server, Api(api_key=server.api_key, base_url=server.base_url) as api:
        projects = [p.name for p in api.projects("demo")]
        targets = [f for p in projects for f in discover_runs(api, "demo", p)]
        tally = export_all(api, warehouse, targets, full=False, workers=args.workers, quiet=args.quiet)
    warehouse.refresh_catalog()
    print_guide(warehouse, root, projects, tally, time.perf_counter() - started)
    error = partial_failure(tally, [], "the sample dataset")
    if error:
        raise error
    return EXIT_OK
