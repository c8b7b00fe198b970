"""The vault's git commit, for the reproducibility record (a vault under git says which notes ran)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def vault_commit(root: Path) -> str | None:
    """HEAD of the repository at the vault root, or None when the vault is no repository or has no commit
    yet (then `git rev-parse HEAD` prints `HEAD` itself and fails, which must not be recorded as a commit)."""
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None
