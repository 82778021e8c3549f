"""The emulator's state: projects and runs loaded from a dataset directory, with every write
persisted back to it, plus run listing (filters, order, cursors) and Parquet history export.
The records it holds are in `records.py`.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import filters as flt
from . import parquet_export
from .artifacts import ArtifactStore
from .dataset import (
    RUN_STATES,
    TERMINAL_STATES,
    iter_project_dirs,
    iter_run_dirs,
    iter_trash,
    move_to_trash,
    read_run_meta,
    take_from_trash,
)
from .profiles import ProfileState
from .records import ProjectRecord, RunRecord, iso, parse_time, safe_component, utcnow

PARQUET_MODES = ("auto", "live", "parquet")


class Store:
    """All emulator state. Thread-safe: GraphQL resolvers and the Python control API share it."""

    def __init__(self, root: Path, *, parquet_mode: str = "auto", cache_dir: Path | None = None,
                 default_entity: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._own_cache = cache_dir is None
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="wandb-emulator-cache-"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.set_parquet_mode(parquet_mode)
        self._default_entity = default_entity
        self.profiles = ProfileState()
        self.reload()

    # -- loading -------------------------------------------------------------------------
    def reload(self) -> None:
        """(Re)read the dataset directory; malformed runs raise DatasetError naming the file."""
        with self.lock:
            self.projects: dict[tuple[str, str], ProjectRecord] = {}
            self.runs: dict[tuple[str, str, str], RunRecord] = {}
            self.by_storage_id: dict[str, RunRecord] = {}
            self.profiles.forget_all()
            for ent, proj, pdir in iter_project_dirs(self.root):
                self.projects[(ent, proj)] = ProjectRecord(ent, proj, pdir)
            for ent, proj, run_id, rdir in iter_run_dirs(self.root):
                run = RunRecord(ent, proj, run_id, rdir, read_run_meta(rdir))
                self._add_run(run)
                self.profiles.observe(run, loaded=True)
            self.artifacts = ArtifactStore(self)

    def _add_run(self, run: RunRecord) -> None:
        self.runs[(run.entity, run.project, run.run_id)] = run
        self.by_storage_id[run.storage_id] = run

    def close(self) -> None:
        if self._own_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    @property
    def default_entity(self) -> str:
        if self._default_entity:
            return self._default_entity
        entities = self.entities()
        return entities[0] if entities else "emulator"

    def entities(self) -> list[str]:
        return sorted({e for e, _ in self.projects})

    def set_parquet_mode(self, mode: str) -> None:
        if mode not in PARQUET_MODES:
            raise ValueError(f"parquet_mode must be one of {PARQUET_MODES}, got {mode!r}")
        self.parquet_mode = mode

    # -- reads ---------------------------------------------------------------------------
    def get_project(self, entity: str, project: str) -> ProjectRecord | None:
        return self.projects.get((entity, project))

    def list_projects(self, entity: str) -> list[ProjectRecord]:
        with self.lock:
            return [p for (e, _), p in sorted(self.projects.items()) if e == entity]

    def get_run(self, entity: str, project: str, run_id: str) -> RunRecord | None:
        return self.runs.get((entity, project, run_id))

    def require_run(self, entity: str, project: str, run_id: str) -> RunRecord:
        run = self.get_run(entity, project, run_id)
        if run is None:
            raise KeyError(f"no run {entity}/{project}/{run_id}")
        return run

    def project_runs(self, entity: str, project: str) -> list[RunRecord]:
        with self.lock:
            return [r for (e, p, _), r in self.runs.items() if e == entity and p == project]

    def query_runs(self, entity: str, project: str, filters: Any = None, order: str | None = None) -> list[tuple[tuple, RunRecord]]:
        """Runs matching `filters`, ordered by `order` with the storage id as tie-break.

        Returns (cursor key, run) pairs; the cursor key locates a position even after the
        run it came from is deleted, so paging stays stable while runs come and go.
        """
        path, desc = flt.parse_order(order)
        flt.validate(filters)  # also when no run is there to evaluate it against
        view = self.profiles.filter_view(filters)  # as of now, or as a lagging index saw it
        runs = [r for r in self.project_runs(entity, project) if (v := view(r)) is not None and flt.matches(v, filters)]
        keyed = [((flt.sort_key(r, path), r.storage_id), r) for r in runs]
        import functools

        keyed.sort(key=functools.cmp_to_key(lambda a, b: flt.compare(a[0], b[0], desc)))
        return keyed

    # -- writes --------------------------------------------------------------------------
    def ensure_project(self, entity: str, project: str) -> ProjectRecord:
        with self.lock:
            rec = self.projects.get((entity, project))
            if rec is None:
                pdir = self.root / safe_component(entity, "entity") / safe_component(project, "project")
                pdir.mkdir(parents=True, exist_ok=True)
                rec = self.projects[(entity, project)] = ProjectRecord(entity, project, pdir)
            return rec

    def create_run(self, entity: str, project: str, run_id: str, meta: dict | None = None) -> RunRecord:
        with self.lock:
            if (entity, project, run_id) in self.runs:
                raise ValueError(f"run {entity}/{project}/{run_id} exists")
            pdir = self.ensure_project(entity, project).dir
            rdir = pdir / safe_component(run_id, "run")
            rdir.mkdir(parents=True, exist_ok=True)
            now = iso(utcnow())
            meta = {"state": "running", "created_at": now, "heartbeat_at": now, **(meta or {})}
            if meta["state"] not in RUN_STATES:
                raise ValueError(f"state must be one of {RUN_STATES}, got {meta['state']!r}")
            run = RunRecord(entity, project, run_id, rdir, meta)
            run.save()
            self._add_run(run)
            self.profiles.observe(run, created=True)
            return run

    def update_run(self, run: RunRecord, **changes: Any) -> RunRecord:
        """Set run.json keys (None deletes nothing: it stores null, as W&B does) and persist."""
        with self.lock:
            if "state" in changes and changes["state"] not in RUN_STATES:
                raise ValueError(f"state must be one of {RUN_STATES}, got {changes['state']!r}")
            previous_state = run.meta.get("state")
            run.meta.update(changes)
            run.meta["updated_at"] = iso(utcnow())
            run.save()
            self.profiles.observe(run, previous_state=previous_state)
            return run

    def delete_run(self, run: RunRecord, delete_artifacts: bool = False) -> None:
        """Delete softly, as W&B does: the run leaves listings and lookups, and its directory
        moves whole to `<project>/.deleted/<run_id>/` with the deletion time, for restore_run.
        Its artifact links stay (only the run answers for them), so a restore brings them back;
        `delete_artifacts` deletes the artifacts it logged for good."""
        with self.lock:
            self.runs.pop((run.entity, run.project, run.run_id), None)
            self.by_storage_id.pop(run.storage_id, None)
            if delete_artifacts:
                self.artifacts.forget_run(run, True)
            self.profiles.forget(run)
            move_to_trash(run.dir, iso(utcnow()))

    def deleted_runs(self, entity: str, project: str) -> dict[str, datetime | None]:
        """Run id -> deletion time (None if unrecorded) of the project's deleted runs."""
        rec = self.projects.get((entity, project))
        return {} if rec is None else {run_id: parse_time(when) for run_id, when in iter_trash(rec.dir)}

    def restore_run(self, entity: str, project: str, run_id: str) -> RunRecord:
        """Bring a deleted run back: same directory contents, storage id and history."""
        with self.lock:
            if (entity, project, run_id) in self.runs:
                raise ValueError(f"run {entity}/{project}/{run_id} exists; only a deleted run can be restored")
            pdir = self.root / safe_component(entity, "entity") / safe_component(project, "project")
            try:
                rdir = take_from_trash(pdir, safe_component(run_id, "run"))
            except KeyError:
                raise KeyError(f"no deleted run {entity}/{project}/{run_id}") from None
            self.ensure_project(entity, project)
            run = RunRecord(entity, project, run_id, rdir, read_run_meta(rdir))
            self._add_run(run)
            self.profiles.observe(run, loaded=True)
            return run

    # -- the Python control API (also behind the HTTP control endpoint) --------------------
    def append_history(self, entity: str, project: str, run_id: str, rows: list[dict]) -> int:
        """Append logged rows to a run, as a live run would; returns the new last step."""
        with self.lock:
            run = self.require_run(entity, project, run_id)
            for i, row in enumerate(rows):
                if not isinstance(row, dict) or not isinstance(row.get("_step"), int) or isinstance(row.get("_step"), bool):
                    raise ValueError(f"row {i} needs an integer '_step'")
            run.history.append(rows)
            summary = dict(run.summary)
            for row in rows:
                summary.update(row)
            self.update_run(run, summary=summary, heartbeat_at=iso(utcnow()))
            return run.history.last_step

    def append_system(self, entity: str, project: str, run_id: str, events: list[dict]) -> int:
        with self.lock:
            run = self.require_run(entity, project, run_id)
            run.events.append(events)
            return len(run.events)

    def set_state(self, entity: str, project: str, run_id: str, state: str) -> None:
        """Change a run's state; its heartbeat moves too (the run reported it), except under
        the `crash-no-heartbeat` profile (a server watchdog marked it)."""
        with self.lock:
            beat = {} if "crash-no-heartbeat" in self.profiles else {"heartbeat_at": iso(utcnow())}
            self.update_run(self.require_run(entity, project, run_id), state=state, **beat)

    def touch_heartbeat(self, entity: str, project: str, run_id: str, when: datetime | None = None) -> None:
        with self.lock:
            self.update_run(self.require_run(entity, project, run_id), heartbeat_at=iso(when or utcnow()))

    # -- files ---------------------------------------------------------------------------
    def write_file(self, run: RunRecord, name: str, data: bytes) -> Path:
        target = run.file_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return target

    @staticmethod
    def file_info(run: RunRecord, name: str) -> dict:
        path = run.file_path(name)
        if not path.is_file():
            return {"name": name, "size": 0, "md5": None, "updated_at": None, "exists": False,
                    "mimetype": mimetypes.guess_type(name)[0]}
        data_md5 = hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                data_md5.update(chunk)
        st = path.stat()
        return {"name": name, "size": st.st_size, "md5": base64.b64encode(data_md5.digest()).decode(),
                "updated_at": datetime.fromtimestamp(st.st_mtime, timezone.utc), "exists": True,
                "mimetype": mimetypes.guess_type(name)[0] or "application/octet-stream"}

    # -- Parquet history export ----------------------------------------------------------
    def served_from_parquet(self, run: RunRecord) -> bool:
        """Whether parquetHistory lists an export for the run now (under a snapshot profile the
        export may hold only some of its rows: see profiles.ProfileState.snapshot)."""
        if self.profiles.serves_snapshots:
            return self.profiles.snapshot(self, run) is not None
        if self.parquet_mode == "live" or len(run.history) == 0:
            return False
        if self.parquet_mode == "auto" and run.meta.get("state") not in TERMINAL_STATES:
            return False
        return self.parquet_schema(run) is not None

    @staticmethod
    def parquet_schema(run: RunRecord) -> pa.Schema | None:
        """The run's history Parquet schema (W&B's export types), or None when it has none."""
        return parquet_export.history_schema(run.history)

    def parquet_export(self, run: RunRecord) -> Path:
        """The run's history as one Parquet file sorted by _step, cached until history grows."""
        with self.lock:
            return parquet_export.export_history(run.history, self.cache_dir, run.storage_id)

