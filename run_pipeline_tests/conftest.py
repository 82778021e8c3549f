"""Shared fixtures: one emulator per test session on a loopback port, reset to the pristine
sample dataset before every test that uses it.

`pytest --emulator-profile NAME` (repeatable) runs every emulator-backed test against those
server profiles (README.md, "Server profiles"): each reset restores them instead of the default.
`pytest --run-slow` adds the tests marked slow, which a plain `pytest` deselects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from run_pipeline.emulator.sample import generate
from run_pipeline.emulator.server import EmulatorServer

TEST_API_KEY = "testkey" + "7" * 33  # 40 characters, like a real W&B key


def pytest_addoption(parser):
    parser.addoption("--emulator-profile", action="append", default=[], metavar="NAME",
                     help="serve every emulator-backed test with this server profile (repeatable)")
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (dagster dev, the browser, several hosts)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` are deselected (reported as such, never skipped) unless --run-slow
    is given or a -m expression chooses them."""
    if config.getoption("--run-slow") or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


class EmulatorHandle:
    """What tests see: the running server plus the dataset it serves."""

    def __init__(self, server: EmulatorServer, pristine: Path, profiles: list[str] = ()):
        self.server = server
        self.pristine = pristine
        self.profiles = list(profiles)  # what reset restores: none unless --emulator-profile

    base_url = property(lambda self: self.server.base_url)
    api_key = property(lambda self: self.server.api_key)
    dataset_dir = property(lambda self: self.server.dataset_dir)
    store = property(lambda self: self.server.store)
    entity = "demo"

    def reset(self) -> None:
        shutil.rmtree(self.dataset_dir)
        shutil.copytree(self.pristine, self.dataset_dir)
        self.server.clear_faults()
        self.server.set_rate_limit(None)
        self.server.set_parquet_mode("auto")
        self.server.set_profiles(self.profiles)
        self.store.reload()

    def __getattr__(self, name):
        return getattr(self.server, name)


@pytest.fixture(scope="session")
def _emulator_session(tmp_path_factory, pytestconfig):
    root = tmp_path_factory.mktemp("emulator")
    pristine = root / "pristine"
    generate(pristine)
    live = root / "dataset"
    shutil.copytree(pristine, live)
    profiles = pytestconfig.getoption("--emulator-profile")
    with EmulatorServer(live, api_key=TEST_API_KEY, profiles=profiles) as server:
        yield EmulatorHandle(server, pristine, profiles)


@pytest.fixture
def emulator(_emulator_session):
    _emulator_session.reset()
    yield _emulator_session
    _emulator_session.server.clear_faults()


@pytest.fixture
def wandb_env(emulator, tmp_path, monkeypatch):
    """Environment for the real wandb SDK: local base URL, key, and caches under tmp_path."""
    monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
    monkeypatch.setenv("WANDB_API_KEY", emulator.api_key)
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    return emulator


@pytest.fixture
def wandb_api(wandb_env):
    import wandb

    return wandb.Api(api_key=wandb_env.api_key, overrides={"base_url": wandb_env.base_url}, timeout=30)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A loopback S3 server (moto) for the whole session, as "host:port"."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """A fresh bucket on the loopback S3 server: (pyarrow filesystem, bucket name)."""
    import uuid

    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", access_key="test",
                           secret_key="test", region="us-east-1", allow_bucket_creation=True)
    bucket = f"wh-{uuid.uuid4().hex[:12]}"
    fs.create_dir(bucket)
    return fs, bucket
