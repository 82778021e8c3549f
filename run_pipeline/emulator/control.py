"""The control endpoint's actions: let runs progress while the server runs (append history,
change state, touch heartbeat, delete and restore) and turn the operator knobs (faults, rate
limit, Parquet mode, server profiles)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .faults import FaultConfig

if TYPE_CHECKING:
    from .app import EmulatorApp

RUN_ACTIONS = ("append-history", "append-system", "set-state", "touch-heartbeat", "delete-run", "restore-run")
ACTIONS = RUN_ACTIONS + ("faults", "rate-limit", "parquet-mode", "profile", "reload", "stats")


def apply_control(app: "EmulatorApp", action: str, body: dict) -> dict[str, Any]:
    store = app.store
    if action in RUN_ACTIONS:
        missing = [k for k in ("entity", "project", "run_id") if not isinstance(body.get(k), str)]
        if missing:
            raise ValueError(f"{action} needs string fields {', '.join(missing)}")
        ref = (body["entity"], body["project"], body["run_id"])
        if action == "append-history":
            return {"last_step": store.append_history(*ref, _rows(body))}
        if action == "append-system":
            return {"events": store.append_system(*ref, _rows(body))}
        if action == "set-state":
            store.set_state(*ref, body.get("state"))
            return {"state": body.get("state")}
        if action == "delete-run":
            store.delete_run(store.require_run(*ref), bool(body.get("delete_artifacts")))
            return {"deleted": True}
        if action == "restore-run":
            return {"restored": True, "id": store.restore_run(*ref).storage_id}
        store.touch_heartbeat(*ref)
        return {"ok": True}
    if action == "faults":
        knobs = {k: float(body[k]) for k in ("slow_seconds", "retry_after") if body.get(k) is not None}
        app.faults.configure(FaultConfig(seed=int(body.get("seed", 0)), rates=dict(body.get("rates") or {}),
                                         **({"paths": tuple(body["paths"])} if body.get("paths") else {}), **knobs))
        return {"ok": True}
    if action == "rate-limit":
        app.rate_limiter.configure(body.get("requests_per_second"))
        return {"ok": True}
    if action == "parquet-mode":
        store.set_parquet_mode(body.get("mode"))
        return {"mode": store.parquet_mode}
    if action == "profile":
        names, options = body.get("profiles", []), body.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError("'options' must be a JSON object")
        store.profiles.configure(names, **options)
        return store.profiles.describe()
    if action == "reload":
        store.reload()
        return {"runs": len(store.runs)}
    if action == "stats":
        return {"requests": app.requests_served, "faults": dict(app.faults.injected), "runs": len(store.runs)}
    raise KeyError(f"unknown control action {action!r}; known: {', '.join(ACTIONS)}")


def _rows(body: dict) -> list[dict]:
    rows = body.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("'rows' must be a list of JSON objects")
    return rows
