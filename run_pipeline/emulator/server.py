"""Run the emulator on a loopback port in a background thread: port 0, readiness check, and a
context manager for tests and for the embedded demo."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import requests
import uvicorn

from .app import EmulatorApp
from .faults import FaultConfig, FaultInjector, RateLimiter
from .profiles import check_profiles
from .store import Store

DEFAULT_API_KEY = "emulator" + "0" * 32  # W&B keys are 40 characters


class EmulatorServer:
    """A W&B-compatible server over a dataset directory.

    `dataset_dir=None` serves a fresh copy of the built-in sample dataset in a temporary
    directory (deleted on stop); otherwise writes persist to `dataset_dir`. `profiles` names
    server profiles (see profiles.PROFILES) and `profile_options` their options.
    """

    def __init__(self, dataset_dir: str | Path | None = None, *, api_key: str = DEFAULT_API_KEY,
                 host: str = "127.0.0.1", port: int = 0, parquet_mode: str = "auto",
                 faults: FaultConfig | None = None, rate_limit: int | None = None,
                 default_entity: str | None = None, profiles: list[str] | tuple[str, ...] = (),
                 profile_options: dict | None = None):
        if not api_key:
            raise ValueError("the emulator needs an API key to check requests against")
        check_profiles(profiles, profile_options)  # before any work: a bad name fails fast
        self._tmp: Path | None = None
        if dataset_dir is None:
            from .sample import generate

            self._tmp = Path(tempfile.mkdtemp(prefix="wandb-emulator-"))
            dataset_dir = self._tmp / "dataset"
            generate(dataset_dir)
        self.dataset_dir = Path(dataset_dir)
        self.api_key = api_key
        self.host = host
        self._port = port
        self.store = Store(self.dataset_dir, parquet_mode=parquet_mode, default_entity=default_entity)
        self.store.profiles.configure(profiles, **(profile_options or {}))
        self.app = EmulatorApp(self.store, api_key, faults=FaultInjector(faults), rate_limiter=RateLimiter(rate_limit))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def start(self, timeout: float = 15.0) -> "EmulatorServer":
        config = uvicorn.Config(self.app, host=self.host, port=self._port, log_level="warning",
                                lifespan="off", access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="wandb-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start on {self.host}:{self._port}")
            time.sleep(0.01)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]
        self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + max(timeout, 0.5)
        while True:
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator at {self.base_url} is not answering")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
        self.store.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- operator knobs (the same as POST /_control/...) ----------------------------------
    def set_faults(self, seed: int = 0, rates: dict[str, float] | None = None, paths=None, **kw) -> None:
        cfg = FaultConfig(seed=seed, rates=dict(rates or {}), **({"paths": tuple(paths)} if paths else {}), **kw)
        self.app.faults.configure(cfg)

    def clear_faults(self) -> None:
        self.app.faults.configure(None)

    def set_rate_limit(self, requests_per_second: int | None = None) -> None:
        self.app.rate_limiter.configure(requests_per_second)

    def set_parquet_mode(self, mode: str) -> None:
        self.store.set_parquet_mode(mode)

    def set_profiles(self, names=(), **options) -> None:
        """Replace the active server profiles (none = the default server); unset options take
        their defaults. ValueError names an unknown profile or option."""
        self.store.profiles.configure(names, **options)


logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
