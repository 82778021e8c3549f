"""Metrics packs under crashes and concurrency: a compaction (or a re-export of a packed run)
SIGKILLed at each step of its protocol leaves readers with no duplicated row (a run's long form
is there whole or absent), and the next compaction or export repairs it to exactly what a
never-compacted warehouse holds; an export holding a run while a compaction runs is waited for
by neither side (the compaction leaves the run for next time)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from run_pipeline.warehouse import FULL, RunKey, Warehouse, packs

from ..warehouse.helpers import make_run, same_rows
from ..warehouse.test_packs import (
    METRICS_SQL,
    export,
    history,
    keys,
    own_metrics_files,
    pack_files,
    rows,
)

REPO = Path(__file__).resolve().parents[2]
RUNNING = RunKey("team", "proj", "live")  # never packed: the metrics glob always matches a file

# A process that runs one warehouse operation and stops at the `nth` call of one function
# (before or after it), says so, and then dies by SIGKILL or carries on, as the test says.
DRIVER = """
import os, signal, sys
from run_pipeline.warehouse import RunKey, Warehouse, compaction, packs
from run_pipeline_tests.warehouse.test_packs import export, history
root, target, when, nth, operation = sys.argv[1:6]
owner, name = target.rsplit(".", 1)
owner = {"compaction": compaction, "packs": packs, "packs.Scratch": packs.Scratch}[owner]
real, calls = getattr(owner, name), []

def stop():
    print("paused", flush=True)
    if sys.stdin.readline().strip() == "kill":
        os.kill(os.getpid(), signal.SIGKILL)

def hooked(*args, **kwargs):
    calls.append(1)
    if when == "before" and len(calls) == int(nth):
        stop()
    out = real(*args, **kwargs)
    if when == "after" and len(calls) == int(nth):
        stop()
    return out

setattr(owner, name, hooked)
wh = Warehouse(root)
if operation == "compact":
    print([r.describe() for r in wh.compact()], flush=True)
else:  # export:<run id>:<seed>:<scale>
    _, run_id, seed, scale = operation.split(":")
    print(export(wh, RunKey("team", "proj", run_id), history(int(seed), scale=float(scale))).describe(), flush=True)
"""


class Paused:
    """The driver process, stopped at its hook."""

    def __init__(self, root: Path, target: str, when: str, nth: int, operation: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root), target, when, str(nth), operation],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "paused":
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the driver never reached {target} ({line!r} {out!r} {err[-2000:]!r})")

    def kill(self) -> None:
        self.proc.stdin.write("kill\n")
        self.proc.stdin.flush()
        self.proc.communicate(timeout=30)
        assert self.proc.returncode == -9

    def resume(self, timeout: float = 60) -> str:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return out


def reader_view(root: Path) -> list[tuple]:
    return rows(root)


def catalog_view(wh: Warehouse) -> list[tuple]:
    with wh.connect() as con:
        return con.execute(METRICS_SQL).fetchall()


def assert_whole_or_absent(got: list[tuple], before: list[tuple]) -> None:
    """Each run's long form, as a reader sees it now: exactly as before, or absent."""
    want: dict[str, list[tuple]] = {}
    for r in before:
        want.setdefault(r[2], []).append(r)
    have: dict[str, list[tuple]] = {}
    for r in got:
        have.setdefault(r[2], []).append(r)
    assert set(have) <= set(want)
    for run_id, seen in have.items():
        assert same_rows(seen, want[run_id]), (run_id, len(seen), len(want[run_id]))


def setup_runs(root: Path, n: int = 8) -> tuple[Warehouse, list[RunKey], list[tuple]]:
    wh = Warehouse(root)
    runs = keys(n)
    for i, key in enumerate(runs):
        export(wh, key, history(i))
    export(wh, RUNNING, history(99), state="running")
    wh.refresh_catalog()
    return wh, runs, rows(root)


STEPS = [  # (function, before/after, nth call, what the warehouse holds then)
    ("packs.Scratch.make_pending", "before", 1),  # the pack written in scratch only
    ("packs.Scratch.make_pending", "after", 1),   # pending; no manifest names it
    ("compaction.write_state", "after", 1),       # one manifest names it, that run's files still there
    ("compaction._drop_files", "after", 3),       # three runs moved, five not
    ("packs.promote", "before", 1),               # every run moved, the pack not yet visible
    ("packs.promote", "after", 1),                # visible; the catalog not yet refreshed
]


@pytest.mark.parametrize("grow", [False, True], ids=["new-pack", "growing-pack"])
@pytest.mark.parametrize("target,when,nth", STEPS, ids=[f"{w}-{t.rsplit('.', 1)[1]}-{n}" for t, w, n in STEPS])
def test_compaction_killed_at_each_step_then_the_next_compaction_recovers(tmp_path, target, when, nth, grow):
    wh, runs, before = setup_runs(tmp_path)
    if grow:  # eight runs packed already; eight more go into that pack, a new file of its name
        [first] = wh.compact()
        more = keys(16)[8:]
        for i, key in enumerate(more, start=8):
            export(wh, key, history(i))
        runs, before = runs + more, rows(tmp_path)
        assert len(pack_files(tmp_path)) == 1
    paused = Paused(tmp_path, target, when, nth, "compact")
    assert_whole_or_absent(reader_view(tmp_path), before)
    assert_whole_or_absent(catalog_view(wh), before)
    pending = packs.pending_packs(wh.root, "team", "proj")
    paused.kill()
    assert_whole_or_absent(reader_view(tmp_path), before)
    assert_whole_or_absent(catalog_view(wh), before)

    [result] = wh.compact()
    assert result.recovered == len(pending)
    if pending:
        assert "1 interrupted pack finished" in result.describe()
    assert same_rows(reader_view(tmp_path), before)
    assert same_rows(catalog_view(wh), before)
    assert packs.pending_packs(wh.root, "team", "proj") == []
    assert not [p for p in (tmp_path / "_staging" / "packs").rglob("*") if p.is_file()]
    # Each finished run is now in exactly one place: a committed pack its manifest names, or
    # its own files (runs the killed compaction never reached, fewer than `min_runs`).
    held = sorted(r for p in pack_files(tmp_path) for r in packs.pack_runs(wh.root, str(p)))
    own = [p.parts[-2].split("=", 1)[1] for p in own_metrics_files(tmp_path)]
    assert sorted(held + own) == sorted([k.run_id for k in runs] + ["live"])
    for key in runs:
        names = {p.pack for p in wh.run_state(key).parts}
        assert names == ({None} if key.run_id in own else {p.name for p in pack_files(tmp_path)
                                                            if key.run_id in packs.pack_runs(wh.root, str(p))})
    [result] = wh.compact(min_runs=1)
    assert result.recovered == 0 and result.runs == len(own) - 1
    assert [p.parts[-2] for p in own_metrics_files(tmp_path)] == ["run_id=live"]
    assert same_rows(reader_view(tmp_path), before)
    assert same_rows(catalog_view(wh), before)
    if grow:
        assert [p.name for p in pack_files(tmp_path)] == list(first.packs)


def test_an_export_of_a_run_naming_a_pending_pack_replaces_it_whole(tmp_path):
    wh, runs, before = setup_runs(tmp_path / "wh")
    ref, _, _ = setup_runs(tmp_path / "ref")
    paused = Paused(tmp_path / "wh", "compaction._drop_files", "after", 2, "compact")
    paused.kill()
    [name] = packs.pending_packs(wh.root, "team", "proj")
    assert {p.pack for p in wh.run_state(runs[1]).parts} == {name}
    # The same history, asked for incrementally: the manifest names a pack no reader sees,
    # so the run is replaced whole.
    assert export(wh, runs[1], history(1), incremental=True).mode == FULL  # the reference: unchanged
    for w in (wh, ref):
        assert export(w, runs[5], history(5, scale=4.0)).mode == FULL
    # r00 is still absent (its manifest names the pending pack too); the rest is the reference's.
    assert same_rows(rows(tmp_path / "wh", "WHERE run_id <> 'r00'"), rows(tmp_path / "ref", "WHERE run_id <> 'r00'"))
    assert "r00" not in {r[2] for r in rows(tmp_path / "wh")}
    assert "r01" not in packs.pack_runs(wh.root, f"{packs.pending_dir(wh.root, 'team', 'proj')}/{name}")
    [result] = wh.compact()
    assert result.recovered == 1
    assert same_rows(rows(tmp_path / "wh"), rows(tmp_path / "ref"))
    assert same_rows(catalog_view(wh), rows(tmp_path / "ref"))
    assert packs.pack_runs(wh.root, str(pack_files(tmp_path / "wh")[0])) == ["r00"]
    assert wh.compact(min_runs=1)[0].runs == 7
    assert [p.parts[-2] for p in own_metrics_files(tmp_path / "wh")] == ["run_id=live"]
    assert same_rows(rows(tmp_path / "wh"), rows(tmp_path / "ref"))


def test_a_reexport_killed_after_its_run_left_the_pack_is_repaired_by_the_next_export(tmp_path):
    """The replace of a packed run takes it out of its pack first, then places its new files and
    manifest. Killed in between, the old manifest still names the pack: the next export must
    not take that for a committed run (it would report it unchanged, its metrics gone)."""
    wh, runs, before = setup_runs(tmp_path)
    assert wh.compact()[0].runs == 8
    paused = Paused(tmp_path, "packs.remove_run", "after", 1, "export:r03:3:2.0")
    assert_whole_or_absent(reader_view(tmp_path), before)
    paused.kill()
    assert_whole_or_absent(reader_view(tmp_path), before)
    assert "r03" not in {r[2] for r in reader_view(tmp_path)}
    result = export(wh, runs[3], history(3, scale=2.0), incremental=True)
    assert result.mode == FULL
    ref = Warehouse(tmp_path / "ref")
    for i, key in enumerate(runs):
        export(ref, key, history(i, scale=2.0 if i == 3 else 1.0))
    export(ref, RUNNING, history(99), state="running")
    assert same_rows(rows(tmp_path), rows(tmp_path / "ref"))


# -- concurrency ------------------------------------------------------------------------------


def in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []

    def run():
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_run_an_export_holds_is_left_busy_and_nothing_waits(tmp_path):
    wh, runs, before = setup_runs(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def held_history(min_step):
        inside.set()  # the export holds r03's lock from here until it commits
        assert release.wait(60)
        yield from history(3, scale=5.0)

    record = make_run("team", "proj", "r03", state="finished", history_line_count=7, last_step=5)
    exporting, exported = in_thread(lambda: wh.export_run(record, held_history))
    assert inside.wait(30)
    compacting, compacted = in_thread(lambda: wh.compact(min_runs=7))
    compacting.join(60)
    assert not compacting.is_alive(), "the compaction waited for a run an export holds"
    [[result]] = compacted
    assert (result.runs, result.busy) == (7, 1)
    assert "(1 runs busy, left for next time)" in result.describe()
    assert [p.parts[-2] for p in own_metrics_files(tmp_path)] == ["run_id=live", "run_id=r03"]
    release.set()
    exporting.join(60)
    assert not exporting.is_alive() and exported[0].mode == FULL
    ref = Warehouse(tmp_path / "ref")
    for i, key in enumerate(runs):
        export(ref, key, history(i, scale=5.0 if i == 3 else 1.0))
    export(ref, RUNNING, history(99), state="running")
    assert same_rows(rows(tmp_path), rows(tmp_path / "ref"))
    assert same_rows(catalog_view(wh), rows(tmp_path / "ref"))


def test_exports_of_packed_runs_wait_for_a_running_compaction_without_deadlock(tmp_path):
    """A compaction (another process) stopped while it holds the packs lock and its runs' locks:
    a replace of a run packed earlier waits for the packs lock, an export of one of its runs waits
    for that run's lock; once it goes on, all three finish and the rows are right."""
    wh, runs, _ = setup_runs(tmp_path)
    assert wh.compact()[0].runs == 8
    later = keys(8, prefix="s")
    for i, key in enumerate(later):
        export(wh, key, history(10 + i))
    paused = Paused(tmp_path, "packs.promote", "before", 1, "compact")
    replacing, replaced = in_thread(lambda: export(wh, runs[2], history(2, scale=7.0)))
    growing, grown = in_thread(lambda: export(wh, later[1], history(11) + history(11, steps=3, start=20),
                                              incremental=True))
    replacing.join(1.0)
    growing.join(0.2)
    assert replacing.is_alive() and growing.is_alive()  # each waits for a lock the compaction holds
    out = paused.resume()
    assert "8 runs (448 metric rows) packed into 1 file" in out
    for t in (replacing, growing):
        t.join(60)
        assert not t.is_alive()
    assert [r.mode for r in replaced + grown] == ["full", "incremental"]

    ref = Warehouse(tmp_path / "ref")
    for i, key in enumerate(runs):
        export(ref, key, history(i, scale=7.0 if i == 2 else 1.0))
    for i, key in enumerate(later):
        export(ref, key, history(10 + i) + (history(11, steps=3, start=20) if i == 1 else []))
    export(ref, RUNNING, history(99), state="running")
    assert same_rows(rows(tmp_path), rows(tmp_path / "ref"))
    wh.compact(min_runs=1)
    assert same_rows(rows(tmp_path), rows(tmp_path / "ref"))
    assert [p.parts[-2] for p in own_metrics_files(tmp_path)] == ["run_id=live"]
