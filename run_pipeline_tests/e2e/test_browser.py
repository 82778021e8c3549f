"""The Dagster UI in headless Chromium, used the way a person uses it: the asset graph shows the
pipeline, and a backfill of run partitions launched from an asset page succeeds. Screenshots of
every step land in tmp_path and, when RUN_PIPELINE_TEST_ARTIFACTS is set, there too."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from run_pipeline.defs.partitions import encode_partition_key
from run_pipeline.emulator.sample import generate
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.warehouse import RunKey

from .dagster_dev import dagster_dev, pipeline_env

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ENTITY, PROJECT = "demo", "image-classification"
RUN_ASSETS = ["wandb_runs", "wandb_run_config", "wandb_run_summary", "wandb_run_history", "wandb_run_system_metrics"]
ALL_ASSETS = [*RUN_ASSETS, "wandb_catalog"]
# The backfill page's "Status" field, as the UI words BulkActionStatus.
BACKFILL_STATUS = re.compile(
    r"\bStatus\s*\n\s*(Requested|In progress|Succeeded|Completed|Failed|Failing|Canceled|Canceling)\b")
UI_TIMEOUT_MS = 30_000


def require_chromium() -> None:
    """No browser: skip on a developer machine, fail under CI (where .ci/run installs it)."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Screenshots:
    """Numbered full-page screenshots in tmp_path, copied to $RUN_PIPELINE_TEST_ARTIFACTS if set."""

    def __init__(self, page, tmp_path: Path):
        self.page = page
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        extra = os.environ.get("RUN_PIPELINE_TEST_ARTIFACTS")
        self.extra = Path(extra) / "browser" if extra else None
        self.count = 0

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.dir / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=path, full_page=True)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, self.extra / path.name)
        return path


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    generate(tmp_path / "dataset", entity=ENTITY, projects=1, runs=6)
    return tmp_path / "dataset"


def test_backfill_from_the_dagster_ui(small_dataset, tmp_path):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # the UI polls; a cold webserver answers slowly

    run_ids = sorted(p.name for p in (small_dataset / ENTITY / PROJECT).iterdir())
    keys = [encode_partition_key(RunKey(ENTITY, PROJECT, rid)) for rid in run_ids]
    chosen = keys[:3]

    with EmulatorServer(small_dataset, api_key="ui" + "4" * 38) as emulator, \
            dagster_dev(tmp_path, pipeline_env(base_url=emulator.base_url, api_key=emulator.api_key,
                                               entity=ENTITY, projects=PROJECT,
                                               warehouse=tmp_path / "wh")) as dev, \
            sync_playwright() as pw:
        # A newcomer does nothing: the discovery sensor (running by default) registers every run.
        dev.wait_until("the discovery sensor to register every run as a partition",
                       lambda: set(keys) <= set(dev.partition_keys("wandb_run_history")), timeout=120)

        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(UI_TIMEOUT_MS)
            shots = Screenshots(page, tmp_path)
            # A fresh instance greets the first visitor with a newsletter modal; dismiss it
            # whenever it shows up, as a person would. The click goes to its Skip button itself:
            # when the modal opens together with one of the test's own dialogs, that dialog's
            # portal lies over it and a click at the button's position would land there.
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").dispatch_event("click"))
            try:
                backfill_id = _drive_ui(page, expect, dev.url, chosen, shots)
            except Exception:
                shots.take("failure")
                raise
        finally:
            browser.close()

        backfill = dev.backfill(backfill_id)
        assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill}\n{dev.log_tail()}"
        assert sorted(backfill["partitionNames"]) == sorted(chosen)
        materialized = {(m["assetKey"]["path"][-1], m["partition"])
                        for r in backfill["runs"] for m in r["assetMaterializations"]}
        assert materialized == {(a, k) for a in RUN_ASSETS for k in chosen}


def _drive_ui(page, expect, url: str, chosen: list[str], shots: Screenshots) -> str:
    """Click through the UI; return the id of the backfill it launched."""
    # The asset graph (Lineage) shows every asset of the pipeline.
    page.goto(f"{url}/asset-groups")
    expect(page.get_by_role("button", name=re.compile("Materialize all"))).to_be_visible()
    for name in ALL_ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Loading...")).to_have_count(0)
    shots.take("asset-graph")

    # The catalog lists them too; open the history asset from there.
    page.goto(f"{url}/assets")
    for name in ALL_ASSETS:
        expect(page.locator(f'a[href="/assets/{name}"]').first).to_be_visible()
    shots.take("asset-catalog")
    page.locator('a[href="/assets/wandb_run_history"]').first.click()
    expect(page.get_by_text("One row per logged step of one W&B run")).to_be_visible()
    shots.take("asset-page-before")

    # Materialize → the multi-asset warns that its siblings come along → choose run partitions.
    page.get_by_role("button", name="Materialize").first.click()
    expect(page.get_by_text("Additional assets will be materialized")).to_be_visible()
    shots.take("multi-asset-notice")
    page.get_by_role("button", name="Confirm").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize 5 assets")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    for key in chosen:
        page.get_by_role("menuitem").filter(has_text=key).click()
    page.keyboard.press("Escape")
    expect(page.get_by_placeholder("Filter partitions")).to_have_count(0)
    expect(dialog.get_by_text(f"{len(chosen)} partitions")).to_be_visible()
    shots.take("launch-backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()

    # The toast links to the backfill's page, which refreshes itself until the backfill ends.
    toast = page.get_by_text(re.compile(r"Created backfill \w+"))
    expect(toast).to_be_visible()
    backfill_id = toast.inner_text().split()[-1]
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(rf"/runs/b/{backfill_id}"))
    status = _wait_backfill_page(page, timeout=180)
    shots.take("backfill-page")
    assert status == "Succeeded", f"the UI shows the backfill as {status!r}"

    # The Runs page shows the backfill's run; the asset page now carries its metadata.
    page.goto(f"{url}/runs")
    expect(page.get_by_text(backfill_id).first).to_be_visible()
    shots.take("runs-page")
    page.goto(f"{url}/assets/wandb_run_history")
    expect(page.get_by_text("Never materialized")).to_have_count(0)
    shots.take("asset-page-after")
    page.goto(f"{url}/assets/wandb_run_history?view=partitions")
    page.get_by_text(chosen[0], exact=True).first.click()
    expect(page.get_by_text("rows_total").first).to_be_visible()
    shots.take("asset-partition")
    page.goto(f"{url}/assets/wandb_run_history?view=checks")
    expect(page.get_by_text("history_reconciled").first).to_be_visible()
    shots.take("asset-checks")
    page.goto(f"{url}/assets/wandb_run_history?view=events")
    expect(page.get_by_text("rows_total").first).to_be_visible()
    shots.take("asset-events")
    page.goto(f"{url}/assets/wandb_runs")
    expect(page.get_by_text("One row per W&B run").first).to_be_visible()
    expect(page.get_by_text("states").first).to_be_visible()
    shots.take("runs-asset-page")
    return backfill_id


def _wait_backfill_page(page, timeout: float) -> str:
    """The status the backfill page shows once it is no longer requested or in progress."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        match = BACKFILL_STATUS.search(page.locator("body").inner_text())
        status = match.group(1) if match else None
        if status not in (None, "Requested", "In progress", "Failing", "Canceling"):
            return status
        page.wait_for_timeout(2000)
    raise AssertionError(f"the backfill page still shows {status!r} after {timeout:.0f} s")
