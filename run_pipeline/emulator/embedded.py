"""An emulator in the calling process over a shared sample dataset: what the Dagster
definitions serve when no W&B server is configured."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .sample import generate
from .server import EmulatorServer


def default_dataset() -> Path:
    return Path(tempfile.gettempdir()) / "run_pipeline-embedded-dataset"


@contextmanager
def embedded_emulator(dataset_dir: str | Path | None = None) -> Iterator[EmulatorServer]:
    """A started emulator over `dataset_dir` (written from the built-in sample when missing;
    default: a directory under the system temp dir that every process of a deployment shares)."""
    root = Path(dataset_dir) if dataset_dir else default_dataset()
    if not root.exists():
        tmp = Path(tempfile.mkdtemp(prefix=".sample-", dir=root.parent))
        try:
            generate(tmp)
            try:
                tmp.rename(root)
            except OSError:  # another process made it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with EmulatorServer(root) as server:
        yield server
