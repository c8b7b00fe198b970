"""The watcher end to end: a real watchdog observer on a temporary copy of the example vault,
a tiny local model, a 300 ms debounce.

In-process tests run `Watcher.serve()` in a thread and stop it with `stop_event`; the
crash and signal tests run the real `actadd-notes watch` as a subprocess, so that SIGKILL,
SIGTERM and Ctrl-C hit a real process. The last test runs `actadd-notes demo` on the
embedded model (minutes on a 2-core CPU; marked `embedded`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import tiny_threads
from vaults import (
    SLOW,
    TURNER,
    USER_TEXT,
    body,
    example_vault,
    experiment_lines,
    idle_vault,
    journal_lines,
    props,
    result_notes,
    save_like_obsidian,
    spec_text,
    status,
    tiny_model_dir,
    wait_for,
    write_spec,
)

from actadd_notes.cli import cli
from actadd_notes.errors import VaultError
from actadd_notes.jobs import DONE, FAILED, QUEUED, RUNNING, JobRunner, ModelSlot
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note
from actadd_notes.watcher import Watcher

pytestmark = [
    pytest.mark.timeout(180),
    # watchdog's inotify thread warns when a new folder tree (Results/artifacts/<run>) gets a
    # watch twice; under filterwarnings=error that warning would kill the thread, and the
    # watcher would go deaf. Third-party noise: the CLI's `watch` silences it the same way.
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]

DEBOUNCE_MS = 300
SETTLE_S = 4 * DEBOUNCE_MS / 1000  # long enough for a retrigger to show, were there one


def generating(spec: Path) -> bool:
    """Running, past loading the model: the first batch wrote a progress above 0%."""
    try:
        p = Note.read(spec).properties
    except VaultError:
        return False
    return p.get("status") == RUNNING and p.get("progress") not in (None, "0%")


# --- in-process watcher ---------------------------------------------------------------


@contextmanager
def watching(vault: Path) -> Iterator[tuple[Watcher, list[str]]]:
    """A Watcher serving `vault` in a thread, started (watches in place, scan done) on entry."""
    log: list[str] = []
    stop = threading.Event()
    runner = JobRunner(VaultConfig.load(vault), models=ModelSlot(device="cpu"))
    watcher = Watcher(runner, debounce_ms=DEBOUNCE_MS, stop_event=stop, log=log.append)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            watcher.serve()
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    thread = threading.Thread(target=serve, name="test-watcher")
    thread.start()
    try:
        wait_for(lambda: errors or any(line.startswith("watching ") for line in log), 30, "the watcher to start")
        yield watcher, log
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the watcher did not stop"
    if errors:
        raise errors[0]


def test_an_obsidian_save_runs_the_spec_exactly_once(idle_vault, tiny_model_dir):
    spec = write_spec(idle_vault, "love", tiny_model_dir, status="draft")
    queued = spec_text(tiny_model_dir, status="queued")

    with watching(idle_vault) as (watcher, log):
        save_like_obsidian(spec, queued)  # truncate, then three flushed chunks
        wait_for(lambda: status(spec) == DONE, 60, "status: done")
        time.sleep(SETTLE_S)  # the tool's own writes must not queue it again

    assert [o.status for o in watcher.outcomes] == [DONE]
    assert sum(line == "queued Experiments/love.md" for line in log) == 1
    p = props(spec)
    run_id = p["run_id"]
    result = idle_vault / "Results" / f"love {run_id}.md"
    assert result_notes(idle_vault) == [result]
    assert p["result"] == f"[[Results/love {run_id}]]"
    assert p["progress"] == "100%" and p["started"] <= p["finished"]
    assert isinstance(p["best_layer"], int) and isinstance(p["best_coeff"], float)
    assert body(spec) == USER_TEXT
    # plots embedded in the result note exist
    plots = re.findall(r"^!\[\[(.+\.png)\]\]$", result.read_text(), re.MULTILINE)
    assert len(plots) >= 3 and all((idle_vault / plot).is_file() for plot in plots)
    # one journal line and one literature line, both linking the run
    assert len(journal_lines(idle_vault)) == 1 and f"[[Results/love {run_id}" in journal_lines(idle_vault)[0]
    assert (
        len(experiment_lines(idle_vault, TURNER)) == 1 and f"Results/love {run_id}" in experiment_lines(idle_vault)[0]
    )


def test_on_start_every_queued_spec_runs_and_drafts_wait(idle_vault, tiny_model_dir):
    first = write_spec(idle_vault, "first", tiny_model_dir)
    second = write_spec(idle_vault, "second", tiny_model_dir)
    draft = write_spec(idle_vault, "draft", tiny_model_dir, status="draft")
    before = draft.read_bytes()

    with watching(idle_vault) as (watcher, log):
        assert any("(2 job(s) queued)" in line for line in log)
        wait_for(lambda: status(first) == status(second) == DONE, 60, "both specs done")

    assert [o.note.name for o in watcher.outcomes] == ["first.md", "second.md"]
    assert draft.read_bytes() == before
    assert len(result_notes(idle_vault)) == 2


def test_a_malformed_spec_fails_in_its_note_and_the_watcher_goes_on(idle_vault, tiny_model_dir):
    bad_value = idle_vault / "Experiments" / "a-bad-samples.md"
    bad_layer = idle_vault / "Experiments" / "b-bad-layer.md"
    bad_yaml = idle_vault / "Experiments" / "c-bad-yaml.md"
    good = idle_vault / "Experiments" / "d-good.md"
    broken = "---\ntype: actadd-experiment\nstatus: queued\nlayer: [1, 2\n---\nMy words.\n"

    with watching(idle_vault) as (watcher, log):
        save_like_obsidian(bad_value, spec_text(tiny_model_dir, samples="ten"))
        save_like_obsidian(bad_layer, spec_text(tiny_model_dir, layer=99))
        save_like_obsidian(bad_yaml, broken)
        save_like_obsidian(good, spec_text(tiny_model_dir))
        wait_for(lambda: status(good) == DONE, 60, "the good spec to finish")
        wait_for(
            lambda: any("c-bad-yaml.md" in line and "the watcher goes on" in line for line in log),
            10,
            "the invalid YAML to be reported",
        )

    for note, key in ((bad_value, "samples"), (bad_layer, "layer")):
        p = props(note)
        assert p["status"] == FAILED
        assert p["error"].startswith(f"Experiments/{note.name}: {key}: ")
        callout = Note.read(note).region("actadd-error")
        assert callout.startswith("> [!error]") and f"{key}: " in callout
        assert body(note).startswith(USER_TEXT)
    assert "'ten' is not a whole number" in props(bad_value)["error"]
    assert "has layers 0–2" in props(bad_layer)["error"]
    assert "failed Experiments/a-bad-samples.md: samples: 'ten' is not a whole number ≥ 1" in log
    # its properties and words stay as typed; the reason is in its body, where the user looks
    assert bad_yaml.read_text().startswith(broken)
    wait_for(lambda: "cannot read this note's properties" in bad_yaml.read_text(), 10, "the callout")
    assert [o.note.name for o in watcher.outcomes] == ["a-bad-samples.md", "b-bad-layer.md", "d-good.md"]
    assert len(result_notes(idle_vault)) == 1


def test_user_edits_to_the_spec_body_during_the_run_survive(idle_vault, tiny_model_dir):
    spec = write_spec(idle_vault, "love", tiny_model_dir, status="draft", work=SLOW)
    added = "\nWhile it runs: the coefficient 4 rows look odd, check the tokens.\n"

    with watching(idle_vault) as (watcher, _log):
        save_like_obsidian(spec, spec_text(tiny_model_dir, work=SLOW))
        wait_for(lambda: status(spec) == RUNNING, 60, "status: running")
        time.sleep(0.5)
        assert status(spec) == RUNNING, "the job ended before the edit: give it more work"
        save_like_obsidian(spec, spec.read_text() + added, pause=0.002)
        wait_for(lambda: status(spec) == DONE, 90, "status: done")
        time.sleep(SETTLE_S)

    assert body(spec) == USER_TEXT + added
    assert [o.status for o in watcher.outcomes] == [DONE]
    assert len(result_notes(idle_vault)) == 1


def test_status_cancelled_saved_during_the_run_stops_it_and_the_watcher_goes_on(idle_vault, tiny_model_dir):
    slow = write_spec(idle_vault, "a-slow", tiny_model_dir, status="draft", work=SLOW)
    after = write_spec(idle_vault, "b-after", tiny_model_dir, status="draft")

    with watching(idle_vault) as (watcher, _log):
        save_like_obsidian(slow, spec_text(tiny_model_dir, work=SLOW))
        wait_for(lambda: generating(slow), 60, "the job to be generating")
        save_like_obsidian(slow, slow.read_text().replace("status: running", "status: cancelled"), pause=0.002)
        save_like_obsidian(after, spec_text(tiny_model_dir))
        wait_for(lambda: status(after) == DONE, 60, "the next spec to run")

    assert [(o.note.name, o.status) for o in watcher.outcomes] == [("a-slow.md", "cancelled"), ("b-after.md", DONE)]
    p = props(slow)
    assert p["status"] == "cancelled" and "finished" in p and "progress" not in p and "result" not in p
    assert body(slow) == USER_TEXT
    assert [n.name for n in result_notes(idle_vault)] == [f"b-after {props(after)['run_id']}.md"]


def test_the_tools_own_writes_are_recognised_by_their_hash(idle_vault, tiny_model_dir):
    spec = write_spec(idle_vault, "love", tiny_model_dir, status="draft")
    with watching(idle_vault) as (watcher, log):
        save_like_obsidian(spec, spec_text(tiny_model_dir))
        wait_for(lambda: status(spec) == DONE, 60, "status: done")
        wait_for(lambda: watcher.self_writes.is_own(spec), 5, "the last write (the tool's) to be remembered")
        save_like_obsidian(spec, spec.read_text().replace("status: done", "status: queued"))  # the user queues it again
        wait_for(lambda: len(watcher.outcomes) == 2, 60, "the second run")
        assert not any("cannot read" in line for line in log)
    assert [o.status for o in watcher.outcomes] == [DONE, DONE]
    assert len(result_notes(idle_vault)) == 2


def test_a_vault_deleted_while_watching_stops_the_watcher_with_an_error(idle_vault):
    with pytest.raises(VaultError, match=r"watching .* stopped: .*deleted or moved"):
        with watching(idle_vault) as (watcher, _log):
            shutil.rmtree(idle_vault)
            wait_for(lambda: watcher.stop_event.is_set(), 30, "the watcher to notice")


# --- the real `actadd-notes watch` in a subprocess ---------------------------------------


class WatchProcess:
    """`actadd-notes watch VAULT` with its output in a file (a pipe could fill up and block it)."""

    def __init__(self, vault: Path, log: Path):
        script = Path(sys.executable).with_name("actadd-notes")
        command = (
            [str(script)] if script.exists() else [sys.executable, "-c", "from actadd_notes.cli import main; main()"]
        )
        self.log = log
        self._file = open(log, "ab")  # noqa: SIM115  (closed in stop)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [*command, "watch", str(vault), "--debounce-ms", str(DEBOUNCE_MS), "--device", "cpu"],
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=vault,
        )
        self.pid = self.process.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        def seen():
            if self.process.poll() is not None and text not in self.output():
                raise AssertionError(f"the watcher exited ({self.process.returncode}):\n{self.output()}")
            return text in self.output()

        wait_for(seen, timeout, repr(text))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._file.close()


@pytest.fixture
def watch_processes(tmp_path):
    """Start `actadd-notes watch` processes; any still running at the end is killed."""
    started: list[WatchProcess] = []

    def start(vault: Path) -> WatchProcess:
        process = WatchProcess(vault, tmp_path / f"watch-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def claim_files(vault: Path) -> list[Path]:
    return sorted((vault / ".actadd-notes" / "jobs").glob("*.json"))


def test_a_watcher_killed_mid_job_finishes_it_on_restart_without_duplicates(
    idle_vault, tiny_model_dir, watch_processes
):
    spec = write_spec(idle_vault, "love", tiny_model_dir, work=SLOW)  # queued before start: the scan finds it

    first = watch_processes(idle_vault)
    wait_for(lambda: generating(spec) and claim_files(idle_vault), 90, "the job to be generating, with its claim")
    run_id = props(spec)["run_id"]
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(30)
    assert first.process.returncode == -signal.SIGKILL
    assert props(spec)["status"] == RUNNING  # left as a dead process leaves it
    assert result_notes(idle_vault) == []

    second = watch_processes(idle_vault)
    second.wait_for_output("resuming Experiments/love.md")
    wait_for(lambda: status(spec) == DONE, 120, "the resumed job to finish")
    time.sleep(SETTLE_S)
    assert second.stop(signal.SIGTERM) == 0

    p = props(spec)  # the note parses
    assert p["run_id"] == run_id  # resumed under its run id
    assert result_notes(idle_vault) == [idle_vault / "Results" / f"love {run_id}.md"]
    assert p["result"] == f"[[Results/love {run_id}]]"
    assert len(journal_lines(idle_vault)) == 1
    assert len(experiment_lines(idle_vault)) == 1
    assert body(spec) == USER_TEXT
    assert claim_files(idle_vault) == []
    assert second.output().count("running Experiments/love.md") == 1
    assert "Traceback" not in first.output() + second.output()
    assert "Warning" not in second.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_watcher_puts_its_job_back_in_the_queue_and_exits_0(idle_vault, tiny_model_dir, watch_processes, sig):
    spec = write_spec(idle_vault, "love", tiny_model_dir, work=SLOW)
    watcher = watch_processes(idle_vault)
    wait_for(lambda: generating(spec), 90, "the job to be generating")

    assert watcher.stop(sig) == 0, watcher.output()

    p = props(spec)
    assert p["status"] == QUEUED
    assert not {"run_id", "started", "progress", "result"} & set(p)
    assert body(spec) == USER_TEXT
    assert result_notes(idle_vault) == []
    assert "stopping after the current batch" in watcher.output()
    assert "Traceback" not in watcher.output()
    assert claim_files(idle_vault) == [] and not (idle_vault / ".actadd-notes" / "watcher.lock").exists()


def test_a_second_watcher_on_the_same_vault_is_refused(idle_vault, watch_processes):
    first = watch_processes(idle_vault)
    first.wait_for_output("watching ")

    second = CliRunner().invoke(cli, ["watch", str(idle_vault), "--device", "cpu"])

    assert second.exit_code == 1
    assert f"another watcher (pid {first.pid} on host" in second.stderr
    assert first.process.poll() is None  # the first one goes on
    assert first.stop() == 0


# --- the demo, on the embedded model ------------------------------------------------------


@pytest.mark.embedded
@pytest.mark.timeout(1800)
def test_the_demo_runs_the_example_vault_end_to_end(demo_vault):
    target, report = demo_vault
    assert report["vault"] == str(target)
    assert sorted(Path(run["note"]).name for run in report["runs"]) == ["love-hate-held-out.md", "love-hate-sweep.md"]
    (run,) = [run for run in report["runs"] if run["note"].endswith("love-hate-sweep.md")]
    assert run["status"] == DONE
    result = Path(run["result_note"])
    text = result.read_text()
    run_id = Note.read(result).properties["run_id"]
    # a metrics table with the baseline and every setting of the 5 × 4 grid
    table = [line for line in text.splitlines() if line.startswith("| ") and (" c" in line or "baseline" in line)]
    assert (
        "| Setting | sentiment |" in text
        and len([row for row in table if re.match(r"\| (L\d+ c\d|baseline)", row)]) == 21
    )
    plots = re.findall(r"^!\[\[(.+\.png)\]\]$", text, re.MULTILINE)
    assert plots and all((target / plot).is_file() for plot in plots)
    assert "> [!example]- Baseline (no steering)" in text and "> [!example]- Best: " in text
    link = f"Results/love-hate-sweep {run_id}"
    (journal,) = (target / "Journal").glob("*.md")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.md", journal.name)
    assert f"[[{link}" in journal.read_text()
    lit = Note.read(target / "Literature" / f"@{TURNER}.md").region("experiments")
    assert f"[[{link}|" in lit
    assert Note.read(target / "Experiments" / "love-hate-sweep.md").properties["status"] == DONE
