"""The catalog file's companions: the stamp beside it that records which views a finished
refresh wrote (so an unchanged refresh costs a listing), and the temporaries a killed refresh
left."""

from __future__ import annotations

import os
import time
import uuid


def identity(path: str, stamp: str) -> str | None:
    """The views' digest with the file's inode and mtime (None when there is no file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{stamp} {st.st_ino} {st.st_mtime_ns}"


def stamp_path(database: str) -> str:
    directory, name = os.path.split(database)
    return os.path.join(directory, f".{name}.views")


def read_stamp(database: str) -> str | None:
    """The identity recorded by the last refresh that finished (None: none recorded)."""
    try:
        with open(stamp_path(database), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def write_stamp(database: str, stamp: str | None) -> None:
    """Record the views the catalog holds (None: unknown, e.g. while it is being rebuilt)."""
    path = stamp_path(database)
    if stamp is None:
        if os.path.exists(path):
            os.remove(path)
        return
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(stamp)
    os.replace(temporary, path)


#: A temporary catalog older than this was left by a refresh that died (a live one takes seconds).
STALE_TEMPORARY_SECONDS = 3600


def remove_stale_temporaries(database: str) -> None:
    """Delete the temporary catalogs (and their WAL files) of refreshes killed mid-way."""
    directory, name = os.path.split(database)
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    try:
        entries = list(os.scandir(directory or "."))
    except FileNotFoundError:
        return
    for entry in entries:
        if (entry.name.startswith(f"{name}.") and entry.name.endswith((".tmp", ".tmp.wal"))
                and entry.is_file() and entry.stat().st_mtime < cutoff):
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                pass
