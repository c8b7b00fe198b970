"""One watcher per vault, and one process per job.

Both live in `.actadd-notes/` at the vault root. Obsidian hides dot folders: they are
not shown in its file explorer, indexed or searched, and `NoteFilter` ignores them, so
nothing written there shows up in the vault or triggers a job. (A file-sync tool such
as Dropbox or Syncthing does copy it; a lock taken on another host is then reported,
never broken, since its liveness cannot be checked from here.)

    .actadd-notes/watcher.lock          {pid, hostname, started}           `VaultLock`
    .actadd-notes/jobs/<sha256>.json    {note, pid, hostname, run_id, started}   `JobClaims`

A lock file is held by the process that holds an exclusive `flock` on it (released by
the OS when the process dies, so a crash never leaves a live-looking lock), which is
checked against the path after locking, so a file unlinked by its releaser is never
mistaken for the lock. The create race goes through `O_CREAT | O_EXCL`. A file whose
holder is gone (no flock, or where flock is unavailable, a dead pid on this host) is
taken over in place.

The folder is hostile ground like the rest of the vault: links are never followed in it
(`O_NOFOLLOW`, `lstat`), and a lock or claim file that is not a plain file with one link
(a symlink or hard link to a file elsewhere, a FIFO) is refused, never opened for writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import threading
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from actadd_notes.errors import VaultError

try:
    import fcntl
except ImportError:  # Windows: fall back to pid liveness
    fcntl = None  # type: ignore[assignment]

__all__ = ["STATE_DIR", "JobClaims", "VaultLock"]

STATE_DIR = ".actadd-notes"
"""The tool's private folder at the vault root; a dot folder, so Obsidian hides it."""

_HOST = socket.gethostname()
_BINARY = getattr(os, "O_BINARY", 0)  # Windows opens in text mode otherwise
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # Windows has no symlinks to follow by accident

# Lock files held by this process, path -> record. flock alone would do on a local disk,
# but on NFS it is emulated with POSIX locks, which never conflict within one process.
_HELD: dict[str, dict[str, Any]] = {}
_HELD_LOCK = threading.Lock()


class VaultLock:
    """At most one watcher per vault: `.actadd-notes/watcher.lock` holds {pid, hostname, started}.

        with VaultLock(vault):
            for batch in watch_vault(vault): ...

    `acquire()` raises VaultError naming the live holder; a lock left by a dead process
    on this host is taken over. The lock is released on exit, exception included.
    """

    def __init__(self, vault: str | Path):
        self.vault = Path(vault).resolve()
        self.path = self.vault / STATE_DIR / "watcher.lock"
        self._file = _LockFile(self.path)

    @property
    def held(self) -> bool:
        return self._file.held

    def acquire(self) -> VaultLock:
        if self._file.held:
            raise RuntimeError(f"{self.path} is already held by this VaultLock")
        _make_state_dir(self.vault, self.path.parent)
        record = {"pid": os.getpid(), "hostname": _HOST, "started": _now()}
        holder = self._file.acquire(record)
        if holder is not None:
            raise VaultError(_describe(holder, self.path), path=self.path)
        return self

    def release(self) -> None:
        self._file.release()

    def __enter__(self) -> VaultLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"VaultLock({str(self.vault)!r}, held={self.held})"


class JobClaims:
    """Per-job claims, so two processes (`actadd-notes run` and the watcher) never run one job.

    `claim(note, run_id)` is False while a live process holds the note's claim (this one
    included: a second claim of a held note is refused); a claim left by a dead process
    is taken over. Notes are absolute paths or paths relative to the vault. Thread-safe;
    `close()` (or `with`) releases every claim this object holds.
    """

    def __init__(self, vault: str | Path):
        self.vault = Path(vault).resolve()
        self.directory = self.vault / STATE_DIR / "jobs"
        self._held: dict[str, _LockFile] = {}
        self._lock = threading.Lock()

    def claim(self, note_path: str | Path, run_id: str) -> bool:
        note, file = self._key(note_path)
        with self._lock:
            if note in self._held:
                return False
            _make_state_dir(self.vault, self.directory)
            lock = _LockFile(file)
            record = {"note": note, "pid": os.getpid(), "hostname": _HOST, "run_id": str(run_id), "started": _now()}
            if lock.acquire(record) is not None:
                return False
            self._held[note] = lock
            return True

    def release(self, note_path: str | Path) -> None:
        """Release this object's claim on the note, or remove a claim its dead holder left.

        A claim held by another live process is left alone.
        """
        note, file = self._key(note_path)
        with self._lock:
            lock = self._held.pop(note, None)
        if lock is None:
            lock = _LockFile(file)
            record = {"note": note, "pid": os.getpid(), "hostname": _HOST}
            if not os.path.lexists(file) or lock.acquire(record) is not None:
                return
        lock.release()

    def close(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for lock in held:
            lock.release()

    def __enter__(self) -> JobClaims:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _key(self, note_path: str | Path) -> tuple[str, Path]:
        path = Path(note_path)
        path = path if path.is_absolute() else self.vault / path
        path = Path(os.path.realpath(path.parent)) / path.name
        try:
            relative = path.relative_to(self.vault)
        except ValueError:
            raise VaultError(f"{note_path} is outside the vault {self.vault}", path=note_path) from None
        note = unicodedata.normalize("NFC", relative.as_posix())  # macOS may hand us NFD names
        return note, self.directory / f"{hashlib.sha256(note.encode()).hexdigest()}.json"


class _LockFile:
    """One lock file, held while its flock is held by an fd of this object."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Take the file and write `record` into it. Returns None on success, else the
        record of the live holder (empty if unreadable)."""
        key = str(self.path)
        with _HELD_LOCK:
            if key in _HELD:
                return _HELD[key]
            _HELD[key] = record  # reserve against other threads of this process
        taken = False
        try:
            holder = self._acquire(record)
            taken = holder is None
            return holder
        finally:
            if not taken:
                with _HELD_LOCK:
                    del _HELD[key]

    def _acquire(self, record: dict[str, Any]) -> dict[str, Any] | None:
        for _ in range(16):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | _NOFOLLOW | _BINARY)
                except FileNotFoundError:  # released in between: try to create it again
                    continue
                except OSError as error:  # ELOOP: a symlink
                    raise _foreign(self.path, error.strerror or str(error)) from error
                created = False
            except OSError as error:
                raise VaultError(f"cannot create {self.path}: {error.strerror or error}", path=self.path) from error
            keep = False
            try:
                _check_plain(fd, self.path)
                locked = _flock(fd)
                if locked is False:  # a live holder (or, if we just created it, one taking it over)
                    return _read(fd) or {}
                if not _same_file(fd, self.path):  # unlinked by its releaser before we locked it
                    continue
                if not created:
                    holder = _read(fd)
                    if not _gone(holder, locked, fd):
                        return holder or {}
                self._write(fd, record, created)
                self._fd, keep = fd, True
                return None
            finally:
                if not keep:
                    os.close(fd)
        raise VaultError(f"cannot take {self.path}: it keeps being replaced", path=self.path)

    def _write(self, fd: int, record: dict[str, Any], created: bool) -> None:
        """Write the record into the locked file; on a full disk or a quota, no claim is taken and no
        half-written file this call created is left behind."""
        try:
            _write(fd, record)
        except OSError as error:
            if created:
                self.path.unlink(missing_ok=True)
            raise VaultError(f"cannot write {self.path}: {error.strerror or error}", path=self.path) from error

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:  # unlink while still locked, so nobody takes a dying file
                if _same_file(fd, self.path):
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
            else:  # Windows cannot unlink an open file
                os.close(fd)
                fd = None
                with contextlib.suppress(OSError):
                    self.path.unlink()
        finally:
            if fd is not None:
                os.close(fd)
            with _HELD_LOCK:
                _HELD.pop(str(self.path), None)


def _flock(fd: int) -> bool | None:
    """Try an exclusive, non-blocking flock: True taken, False held elsewhere, None unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK on a network drive without a lock daemon
        return None
    return True


def _gone(holder: dict[str, Any] | None, locked: bool | None, fd: int) -> bool:
    """Whether the holder recorded in a lock file we could open is gone for good."""
    if holder is None:  # empty or torn: a crash while writing, or a creator about to lock it
        return bool(locked) or time.time() - os.fstat(fd).st_mtime > 10
    if holder.get("hostname") != _HOST:
        return False  # a synced copy from another host: cannot tell, never break it
    if locked:
        return True  # nobody holds the flock, and flock dies with its process
    pid = holder.get("pid")
    return not (isinstance(pid, int) and _pid_alive(pid))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie (dead, not yet reaped by its parent) is dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        record = json.loads(b"".join(chunks))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _write(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    while data:
        data = data[os.write(fd, data) :]


def _describe(holder: dict[str, Any], path: Path) -> str:
    if not holder:
        return f"another watcher is running on this vault (lock file {path})"
    pid, host = holder.get("pid", "?"), holder.get("hostname", "?")
    message = f"another watcher (pid {pid} on host {host}) is running on this vault since {holder.get('started', '?')}"
    if host != _HOST:
        message += f"; if it is no longer running, delete {path}"
    return message


def _make_state_dir(vault: Path, directory: Path) -> None:
    """Create `directory` and the folders above it up to the vault, each a real folder: a
    symlink among them (which could lead anywhere) is refused."""
    if not vault.is_dir():
        raise VaultError(f"vault {vault} is not a directory", path=vault)
    parts = directory.relative_to(vault).parts
    for depth in range(1, len(parts) + 1):
        folder = vault.joinpath(*parts[:depth])
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        except OSError as error:
            raise VaultError(f"cannot create {folder}: {error.strerror or error}", path=folder) from error
        mode = os.lstat(folder).st_mode
        if not stat.S_ISDIR(mode):
            raise _foreign(folder, "a symlink or a file where the tool keeps its folder")


def _check_plain(fd: int, path: Path) -> None:
    """Refuse a lock file that is no plain file of one link: writing it would write elsewhere."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _foreign(path, "not a plain file")
    if info.st_nlink != 1:
        raise _foreign(path, f"a hard link ({info.st_nlink} names for one file)")


def _foreign(path: Path, why: str) -> VaultError:
    return VaultError(
        f"{path}: {why}; the tool never follows links or writes through them in its own folder. "
        "If you did not put it there, check the vault; delete it to go on",
        path=path,
    )


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
