"""The watcher, with its lock and its event source.

loop.py    `Watcher`: spec notes in, results out, one job at a time, crash-safe
lock.py    `VaultLock` (one watcher per vault) and `JobClaims` (one process per job)
events.py  `watch_vault`: debounced batches of file events; `SelfWrites`, the tool's own writes
"""

from __future__ import annotations

from actadd_notes.watcher.loop import Watcher

__all__ = ["Watcher"]
