"""The vault's git commit, for the reproducibility record (a vault under git says which notes ran)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def vault_commit(root: Path) -> str | None:
    """HEAD of the repository at the vault root, or None when the vault is no repository."""
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
    return done.stdout.strip() or None
