"""Tie a worker process's life to another process's: when the owner dies, by any signal, the
worker exits too.

A process-pool worker is a child of the fork server, not of the process that owns the pool, so
a parent-death signal alone does not reach it; and a worker blocked on its task queue never
notices, since the other workers keep that pipe open. With the workers gone, the fork server
and the resource tracker see their pipes close and exit on their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
#: How often the portable fallback checks that the owner is alive.
POLL_SECONDS = 1.0


def die_with(owner_pid: int) -> None:
    """Exit this process as soon as `owner_pid` is gone (a daemon thread waits for it: on Linux
    on a pidfd, elsewhere by polling). Also asks Linux to kill this process when its own
    parent dies."""
    _parent_death_signal(signal.SIGKILL)
    threading.Thread(target=_watch, args=(owner_pid,), name="run_pipeline-lifeline", daemon=True).start()


def _parent_death_signal(sig: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except OSError:
        pass


def _watch(owner_pid: int) -> None:
    try:
        fd = os.pidfd_open(owner_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux, or an old kernel): poll
        while _alive(owner_pid):
            time.sleep(POLL_SECONDS)
        os._exit(1)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not poller.poll():  # readable once the owner has exited
        pass
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
