"""Input checks that run before any work: each bad value gets one line naming it and what
would be accepted. argparse `type=` functions raise `ArgumentTypeError`; the rest `CliError`."""

from __future__ import annotations

import argparse
import difflib
import errno
import math
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from run_pipeline.settings import RUN_STATES

from .codes import EXIT_USAGE, EXIT_WAREHOUSE, CliError


def whole_number(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def seconds(*, allow_zero: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds, got {text}")
        return value
    return parse


def port(text: str) -> int:
    value = whole_number(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535 (0: any free port), got {value}")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list of names (projects, run ids); empty items are refused."""
    items = [p.strip() for p in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name (comma-separated names, e.g. a,b)")
    return items


def states(text: str) -> list[str]:
    """Run states, comma-separated, each one of `RUN_STATES` exactly (W&B compares them as written)."""
    out = []
    for item in names(text):
        if item in RUN_STATES:
            out.append(item)
            continue
        guess = item.lower() if item.lower() in RUN_STATES else next(
            iter(difflib.get_close_matches(item.lower(), RUN_STATES, n=1)), None)
        hint = f": did you mean {guess}?" if guess else ""
        raise argparse.ArgumentTypeError(f"unknown run state {item!r}{hint} (one of {', '.join(RUN_STATES)})")
    return out


def iso_time(text: str) -> str:
    """An ISO 8601 date or date-time; returned as UTC text `YYYY-MM-DDTHH:MM:SS` (a time without
    an offset is taken as UTC)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)") from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def check_base_url(url: str, source: str) -> str:
    """A W&B API URL needs http(s):// and a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = re.sub(r"//[^/@]*@", "//", url)  # never echo credentials in a URL
        hint = f": did you mean http://{shown}?" if "://" not in url else ""
        raise CliError(EXIT_USAGE, f"{source} {shown!r} is not an http:// or https:// URL with a host{hint}")
    try:
        parts.port
    except ValueError:
        raise CliError(EXIT_USAGE, f"{source} has a bad port: {parts.netloc.rsplit('@', 1)[-1]!r}") from None
    return url.rstrip("/")


def check_local_warehouse(root: str, source: str) -> None:
    """A local warehouse root exists as a writable directory, or can be created (it is)."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) is a file, not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "is not writable" if parent == path else f"cannot be created: {parent} is not writable"
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) cannot be created: {exc.strerror}") from None


def check_port_free(host: str, number: int) -> None:
    if number == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host, number))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(EXIT_USAGE, f"port {number} on {host} is in use: pick another with --port "
                                           "(--port 0 takes a free one)") from None
            raise CliError(EXIT_USAGE, f"cannot listen on {host}:{number}: {exc.strerror}") from None


def check_dataset(path: Path) -> bool:
    """The emulator's --dataset is an existing directory; False when it holds no runs."""
    if not path.exists():
        raise CliError(EXIT_USAGE, f"--dataset {path} does not exist: write one with `run-pipeline sample-data "
                                   f"{path}`, or `mkdir {path}` to start an empty server")
    if not path.is_dir():
        raise CliError(EXIT_USAGE, f"--dataset {path} is a file, not a dataset directory")
    for entity in path.iterdir():
        if entity.is_dir() and not entity.name.startswith((".", "_")):
            for project in entity.iterdir():
                if project.is_dir() and any((d / "run.json").is_file() for d in project.iterdir() if d.is_dir()):
                    return True
    return False


def check_output_dir(path: Path, flag: str) -> None:
    """A directory to write into: missing is fine (it is created), a file is not."""
    if path.exists() and not path.is_dir():
        raise CliError(EXIT_USAGE, f"{flag} {path} is a file, not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(EXIT_USAGE, f"{flag} {path} cannot be written: {parent} is not a writable directory")


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def check_sql(text: str, source: str) -> str:
    if not _COMMENTS.sub("", text).strip().strip(";").strip():
        raise CliError(EXIT_USAGE, f"no SQL to run: {source} is empty or only comments")
    return text
