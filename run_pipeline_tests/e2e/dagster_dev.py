"""`dagster dev` (webserver + daemon) as a test fixture: a fresh DAGSTER_HOME under tmp_path,
the pipeline pointed at an emulator, a GraphQL helper, and a teardown that leaves no process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_ENV_PREFIXES = ("WANDB_", "RUN_PIPELINE_", "DAGSTER_")

REPOSITORIES = """
query { repositoriesOrError {
  __typename
  ... on RepositoryConnection { nodes { name location { name } } }
  ... on PythonError { message }
} }"""

START_SENSOR = """
mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename
  ... on Sensor { sensorState { status } }
  ... on PythonError { message }
  ... on UnauthorizedError { message }
} }"""

SENSOR_TICKS = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename
  ... on Sensor { sensorState { status ticks(limit: 20) { id status timestamp runIds skipReason
                                                          error { message } } } }
} }"""

BACKFILL = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename
  ... on PartitionBackfill { id status partitionNames numPartitions endTimestamp
                             runs(limit: 100) { id status tags { key value }
                                                assetMaterializations { assetKey { path } partition } } }
  ... on PythonError { message }
  ... on BackfillNotFoundError { message }
} }"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename
  ... on LaunchBackfillSuccess { backfillId }
  ... on Error { message }
} }"""

LATEST_MATERIALIZATION = """
query($key: AssetKeyInput!) { assetOrError(assetKey: $key) {
  __typename
  ... on Asset { assetMaterializations(limit: 1) { timestamp runId } }
} }"""

RUNS = """
query($filter: RunsFilter) { runsOrError(filter: $filter, limit: 200) {
  __typename
  ... on Runs { results { id status jobName tags { key value } } }
} }"""


class DagsterDev:
    """A running `dagster dev`: its URL, home, log file, and a GraphQL client."""

    def __init__(self, url: str, home: Path, log_path: Path, process: subprocess.Popen):
        self.url = url
        self.home = home
        self.log_path = log_path
        self.process = process
        self._http = requests.Session()

    # -- GraphQL -------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to /graphql and return `data`; GraphQL errors raise with dagster's log tail."""
        resp = self._http.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                               timeout=60)
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def repository_selector(self) -> dict[str, str]:
        """The one code location's {repositoryLocationName, repositoryName}, as a user finds it."""
        repos = self.graphql(REPOSITORIES)["repositoriesOrError"]
        assert repos["__typename"] == "RepositoryConnection", repos
        (node,) = repos["nodes"]
        return {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"]}

    def sensor_selector(self, name: str) -> dict[str, str]:
        return {**self.repository_selector(), "sensorName": name}

    def start_sensor(self, name: str) -> None:
        result = self.graphql(START_SENSOR, {"selector": self.sensor_selector(name)})["startSensor"]
        assert result["__typename"] == "Sensor", result
        assert result["sensorState"]["status"] == "RUNNING", result

    def sensor_ticks(self, name: str) -> list[dict[str, Any]]:
        """The sensor's latest ticks, newest first."""
        sensor = self.graphql(SENSOR_TICKS, {"selector": self.sensor_selector(name)})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        return sensor["sensorState"]["ticks"]

    def partition_keys(self, asset_key: str) -> list[str]:
        """The asset's partition keys as the UI lists them."""
        data = self.graphql("query Keys($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) "
                            "{ __typename ... on AssetNode { partitionKeys } } }", {"path": [asset_key]})
        node = data["assetNodeOrError"]
        assert node["__typename"] == "AssetNode", node
        return list(node["partitionKeys"] or [])

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        result = self.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        return result

    def launch_backfill(self, asset_keys: list[str], partitions: list[str]) -> str:
        """What the UI's "Launch backfill" sends: the selected assets over the chosen partitions."""
        params = {"assetSelection": [{"path": [key]} for key in asset_keys], "partitionNames": partitions,
                  "fromFailure": False}
        result = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def latest_materialization(self, asset_key: str) -> dict[str, Any] | None:
        """{timestamp (ms, as a string), runId} of the asset's latest materialization."""
        asset = self.graphql(LATEST_MATERIALIZATION, {"key": {"path": [asset_key]}})["assetOrError"]
        if asset["__typename"] != "Asset" or not asset["assetMaterializations"]:
            return None
        return asset["assetMaterializations"][0]

    def runs(self, **run_filter: Any) -> list[dict[str, Any]]:
        result = self.graphql(RUNS, {"filter": run_filter or None})["runsOrError"]
        assert result["__typename"] == "Runs", result
        return result["results"]

    def wait_until(self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
        """Poll `probe` until it returns something truthy; fail with dagster's log tail."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"dagster dev exited ({self.process.returncode}) while waiting for {what}\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self.log_tail())
            time.sleep(interval)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_env(*, base_url: str, api_key: str, warehouse: Path, entity: str = "demo",
                 projects: str = "image-classification") -> dict[str, str]:
    """The pipeline's environment: this process's minus any W&B, pipeline or Dagster setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DAGSTER_ENV_PREFIXES)}
    env.update(WANDB_BASE_URL=base_url, WANDB_API_KEY=api_key, WANDB_ENTITY=entity, WANDB_PROJECT=projects,
               RUN_PIPELINE_WAREHOUSE=str(warehouse), PYTHONUNBUFFERED="1")
    return env


@contextmanager
def dagster_dev(tmp_path: Path, env: dict[str, str], *, startup_timeout: float = 90.0) -> Iterator[DagsterDev]:
    """Start `dagster dev -w workspace.yaml` on a free loopback port with DAGSTER_HOME under
    `tmp_path`; yield once the webserver answers and the code location has loaded."""
    home = (tmp_path / "dagster_home").absolute()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    log_path = tmp_path / "dagster-dev.log"
    port = free_port()
    cmd = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port),
           "-w", str(REPO_ROOT / "workspace.yaml")]
    with open(log_path, "wb") as log:
        # A new session makes dagster dev a process-group leader: SIGTERM to the group reaches
        # the webserver, daemon, code server and run workers, and nothing inherits our signals.
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**env, "DAGSTER_HOME": str(home)},
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    dev = DagsterDev(f"http://127.0.0.1:{port}", home, log_path, process)
    seen: dict[int, psutil.Process] = {}
    try:
        dev.wait_until("the webserver to answer HTTP 200", lambda: _answers(dev.url), startup_timeout, 0.5)
        dev.wait_until("the code location to load", lambda: _location_loaded(dev), startup_timeout, 0.5)
        yield dev
    finally:
        _remember_tree(process.pid, seen)
        leftovers = _stop_group(process, seen)
        dev._http.close()
    assert not leftovers, f"processes left running after dagster dev stopped: {leftovers}"


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/server_info", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _location_loaded(dev: DagsterDev) -> bool:
    repos = dev.graphql(REPOSITORIES)["repositoriesOrError"]
    return repos["__typename"] == "RepositoryConnection" and bool(repos["nodes"])


def _remember_tree(pid: int, seen: dict[int, psutil.Process]) -> None:
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            seen.setdefault(p.pid, p)
    except psutil.NoSuchProcess:
        pass


def _alive(seen: dict[int, psutil.Process], pgid: int) -> list[str]:
    """Processes still running from the tree we saw or in dagster dev's process group."""
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    out = {p.pid: p for p in seen.values() if running(p)}
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and running(p):
                out[p.pid] = p
        except ProcessLookupError:
            continue
    names = []
    for pid, p in sorted(out.items()):
        try:
            names.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            continue
    return names


def _stop_group(process: subprocess.Popen, seen: dict[int, psutil.Process], grace: float = 20.0) -> list[str]:
    """SIGTERM the process group, SIGKILL what outlives `grace`; return what is still alive."""
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()
        if not _alive(seen, pgid):
            break
        time.sleep(0.2)
    else:
        warnings.warn(f"dagster dev outlived SIGTERM by {grace:.0f} s; killing {_alive(seen, pgid)}", stacklevel=2)
        for p in list(seen.values()):
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(1)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return _alive(seen, pgid)
