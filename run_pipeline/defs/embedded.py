"""The embedded binding: a `WandbResource` served by an in-process emulator over the built-in
sample dataset, so `dagster dev` works with no account, no credentials and no network. Chosen at
load time (`definitions.py`, the component) when no W&B URL is configured; the only Dagster
module that imports the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field

from run_pipeline.client import Api
from run_pipeline.emulator.embedded import embedded_emulator

from .resources import WandbResource


class EmbeddedWandbResource(WandbResource):
    """Runs from the embedded emulator (started per use, on a free loopback port)."""

    emulator_dataset: str | None = Field(default=None, description="dataset directory of the embedded emulator; "
                                                                    "unset: the built-in sample in the temp dir")

    @contextmanager
    def get_api(self) -> Iterator[Api]:
        with embedded_emulator(self.emulator_dataset) as server:
            with Api(api_key=server.api_key, base_url=server.base_url, timeout=self.timeout) as api:
                yield api


def wandb_resource(*, base_url: str | None, emulator_dataset: str | None = None, **fields) -> WandbResource:
    """The real W&B resource when a URL is configured, else the embedded one."""
    if base_url:
        return WandbResource(base_url=base_url, **fields)
    return EmbeddedWandbResource(emulator_dataset=emulator_dataset, **fields)
