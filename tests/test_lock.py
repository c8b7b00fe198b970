"""VaultLock and JobClaims, across real processes: a live holder is refused by name,
a dead one's lock or claim is taken over."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from actadd_notes.errors import VaultError
from actadd_notes.watcher.lock import JobClaims, VaultLock

pytestmark = pytest.mark.timeout(30)
HOST = socket.gethostname()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    (root / "Experiments").mkdir(parents=True)
    (root / "Experiments" / "love.md").write_text("# Love\n")
    return root.resolve()


class Holder:
    """Another process running `code` (with `vault` bound), which prints `ready` and then
    holds whatever it took until its stdin closes."""

    def __init__(self, vault: Path, code: str):
        script = "import sys\nfrom pathlib import Path\nvault = Path(sys.argv[1])\n" + textwrap.dedent(code)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(vault)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = self.proc.stdout.readline().strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self) -> None:  # a clean exit
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()

    def kill(self) -> None:  # no cleanup at all; reaped, so its pid is really dead
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()


HOLD_VAULT = """
from actadd_notes.watcher.lock import VaultLock
with VaultLock(vault):
    print("ready", flush=True)
    sys.stdin.read()
"""

HOLD_CLAIM = """
from actadd_notes.watcher.lock import JobClaims
claims = JobClaims(vault)
print("ready" if claims.claim("Experiments/love.md", "run-other") else "refused", flush=True)
sys.stdin.read()
claims.close()
"""


def _reaped_pid() -> int:
    """A pid that was alive a moment ago and is dead (and reaped) now."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- VaultLock ------------------------------------------------------------------------


def test_lock_file_holds_pid_host_and_start_and_goes_on_release(vault):
    lock = VaultLock(vault)
    with lock:
        assert lock.held
        record = json.loads(lock.path.read_text())
        assert lock.path == vault / ".actadd-notes" / "watcher.lock"
        assert record["pid"] == os.getpid() and record["hostname"] == HOST
        assert record["started"][:4].isdigit()
    assert not lock.held
    assert not lock.path.exists()


def test_second_watcher_from_another_process_is_refused_by_name(vault):
    holder = Holder(vault, HOLD_VAULT)
    try:
        assert holder.ready == "ready"
        expected = (
            rf"^another watcher \(pid {holder.pid} on host {re.escape(HOST)}\) is running on this vault since \d{{4}}-"
        )
        with pytest.raises(VaultError, match=expected) as info:
            VaultLock(vault).acquire()
        assert info.value.path == vault / ".actadd-notes" / "watcher.lock"
    finally:
        holder.finish()
    with VaultLock(vault):  # released by the holder's clean exit
        pass


def test_lock_of_a_killed_watcher_is_taken_over(vault):
    holder = Holder(vault, HOLD_VAULT)
    assert holder.ready == "ready"
    holder.kill()
    lock = VaultLock(vault)
    assert json.loads(lock.path.read_text())["pid"] == holder.pid  # left behind
    with lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_stale_lock_file_from_a_dead_pid_is_taken_over(vault):
    path = vault / ".actadd-notes" / "watcher.lock"
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": _reaped_pid(), "hostname": HOST, "started": "2024-01-01T00:00:00+00:00"}))
    with VaultLock(vault):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text("{torn")  # a crash while writing: nobody holds it
    with VaultLock(vault):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_from_another_host_is_never_broken(vault):
    path = vault / ".actadd-notes" / "watcher.lock"
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": 1, "hostname": "laptop-elsewhere", "started": "2024-01-01T00:00:00+00:00"}))
    with pytest.raises(VaultError, match=r"pid 1 on host laptop-elsewhere.*delete .*watcher.lock"):
        VaultLock(vault).acquire()
    assert path.exists()


def test_second_lock_in_the_same_process_is_refused(vault):
    with VaultLock(vault):
        with pytest.raises(VaultError, match=rf"pid {os.getpid()} on host"):
            VaultLock(vault).acquire()


def test_lock_is_released_on_exception(vault):
    lock = VaultLock(vault)
    with pytest.raises(RuntimeError, match="inside"):
        with lock:
            raise RuntimeError("inside")
    assert not lock.path.exists()
    VaultLock(vault).acquire().release()


def test_lock_needs_a_vault(tmp_path):
    with pytest.raises(VaultError, match="not a directory"):
        VaultLock(tmp_path / "missing").acquire()


# --- JobClaims ------------------------------------------------------------------------


def claim_file(vault: Path, note: str) -> Path:
    return vault / ".actadd-notes" / "jobs" / f"{hashlib.sha256(note.encode()).hexdigest()}.json"


def test_claim_and_release(vault):
    claims = JobClaims(vault)
    assert claims.claim("Experiments/love.md", "run-1")
    file = claim_file(vault, "Experiments/love.md")
    record = json.loads(file.read_text())
    assert record["note"] == "Experiments/love.md" and record["run_id"] == "run-1"
    assert record["pid"] == os.getpid() and record["hostname"] == HOST and record["started"]

    assert not claims.claim(vault / "Experiments" / "love.md", "run-2")  # absolute path: same job
    assert not JobClaims(vault).claim("Experiments/love.md", "run-3")  # another object, same process
    assert claims.claim("Experiments/hate.md", "run-4")  # another job
    claims.release("Experiments/love.md")
    assert not file.exists()
    assert JobClaims(vault).claim("Experiments/love.md", "run-5")
    claims.close()
    assert not claim_file(vault, "Experiments/hate.md").exists()


def test_claim_refuses_notes_outside_the_vault(vault, tmp_path):
    with pytest.raises(VaultError, match="outside the vault"):
        JobClaims(vault).claim(tmp_path / "elsewhere.md", "run-1")
    with pytest.raises(VaultError, match="outside the vault"):
        JobClaims(vault).claim("../elsewhere.md", "run-1")


def test_claim_held_by_a_live_process_is_refused_then_taken_over_once_it_dies(vault):
    holder = Holder(vault, HOLD_CLAIM)
    try:
        assert holder.ready == "ready"
        claims = JobClaims(vault)
        assert not claims.claim("Experiments/love.md", "run-mine")
        claims.release("Experiments/love.md")  # not ours, holder alive: left alone
        assert claim_file(vault, "Experiments/love.md").exists()
    finally:
        holder.kill()

    assert claims.claim("Experiments/love.md", "run-mine")  # taken over
    assert json.loads(claim_file(vault, "Experiments/love.md").read_text())["run_id"] == "run-mine"
    claims.close()


def test_clean_exit_leaves_no_claim(vault):
    holder = Holder(vault, HOLD_CLAIM)
    assert holder.ready == "ready"
    holder.finish()
    assert not claim_file(vault, "Experiments/love.md").exists()


def test_claims_of_dead_pids_on_this_host_are_taken_over_and_others_never(vault):
    jobs = vault / ".actadd-notes" / "jobs"
    jobs.mkdir(parents=True)
    dead = _reaped_pid()

    def write(note: str, pid: int, host: str = HOST) -> None:
        record = {"note": note, "pid": pid, "hostname": host, "run_id": f"run-{note}", "started": "2024-01-01T00:00:00"}
        claim_file(vault, note).write_text(json.dumps(record))

    write("b.md", dead)
    write("a.md", dead)
    write("elsewhere.md", dead, host="laptop-elsewhere")  # cannot tell: never broken
    claim_file(vault, "torn.md").write_text("{")  # unreadable and unheld: taken over
    claims = JobClaims(vault)
    JobClaims(vault).release("a.md")  # a dead holder's claim can be cleared
    assert not claim_file(vault, "a.md").exists()
    assert claims.claim("b.md", "run-2") and claims.claim("torn.md", "run-3")
    assert not JobClaims(vault).claim("elsewhere.md", "run-1")
    assert JobClaims(vault / "Experiments" / "..").claim("a.md", "run-4")
    claims.close()


def test_pid_reused_by_a_live_process_is_taken_over(vault):
    # the recorded pid is alive (it is ours), but nobody holds the claim file's flock
    if sys.platform == "win32":
        pytest.skip("flock only")
    jobs = vault / ".actadd-notes" / "jobs"
    jobs.mkdir(parents=True)
    record = {"note": "love.md", "pid": os.getpid(), "hostname": HOST, "run_id": "r", "started": "x"}
    claim_file(vault, "love.md").write_text(json.dumps(record))
    assert JobClaims(vault).claim("love.md", "run-2")


def test_exactly_one_of_many_racing_threads_wins(vault):
    barrier, results = threading.Barrier(8), []
    instances = [JobClaims(vault) for _ in range(8)]

    def race(claims: JobClaims) -> None:
        barrier.wait()
        results.append(claims.claim("Experiments/love.md", "run"))

    threads = [threading.Thread(target=race, args=(c,)) for c in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    for claims in instances:
        claims.close()


def test_exactly_one_of_many_racing_processes_wins(vault):
    go = vault / "go"
    code = f"""
    import time
    from actadd_notes.watcher.lock import JobClaims
    claims = JobClaims(vault)
    print("waiting", flush=True)
    while not Path({str(go)!r}).exists():
        time.sleep(0.001)
    print("won" if claims.claim("Experiments/love.md", "run") else "lost", flush=True)
    sys.stdin.read()
    claims.close()
    """
    holders = [Holder(vault, code) for _ in range(6)]
    try:
        assert {h.ready for h in holders} == {"waiting"}
        go.touch()
        outcomes = sorted(h.proc.stdout.readline().strip() for h in holders)
        assert outcomes == ["lost"] * 5 + ["won"]
    finally:
        for holder in holders:
            holder.finish()
    assert not claim_file(vault, "Experiments/love.md").exists()
