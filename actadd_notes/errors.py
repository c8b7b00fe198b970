"""Every error actadd-notes raises on purpose, so callers can catch one family.

    ActaddError
    ├── ModelError          a model cannot be loaded, or has no steerable blocks
    ├── SteeringError       bad steering input: layer out of range, empty prompt, NaN coeff…
    ├── SpecError           an experiment spec note is invalid (names note, key, value)
    ├── VaultError          a path or write into the vault is refused or failed
    │   └── ConflictError   the note changed on disk under us and could not be merged
    ├── TemplateError       a Jinja template failed (names file and line)
    ├── Cancelled           a run was cancelled (the note's status set to `cancelled`)
    ├── ZoteroError         a Zotero source failed or does not know an item
    └── ScaleOutError       Ray is missing, unreachable, or lost a shard too often

`note_context(path)` prefixes any ActaddError raised inside it with the note, so a
message reads ``Experiments/love.md: layer: 40 — SmolLM2-135M-Instruct has layers 0–29``.
The CLI turns these into click errors at one boundary; the watcher writes them into the note.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ActaddError(Exception):
    """Base class: the message is meant for the user, as is."""

    note: str | None = None

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.note}: {message}" if self.note else message


class ModelError(ActaddError):
    """A model cannot be loaded or steered (unknown id, offline, unsupported architecture)."""


class SteeringError(ActaddError):
    """Steering input is invalid (layer out of range, empty prompt, non-finite coefficient…)."""


class SpecError(ActaddError):
    """An experiment spec is invalid; `key` names the offending property."""

    def __init__(self, message: str, *, key: str | None = None, note: str | None = None):
        self.key = key
        self.note = note
        super().__init__(f"{key}: {message}" if key else message)


class VaultError(ActaddError):
    """A vault path or write is refused (outside the vault, inside `.obsidian/`) or failed."""

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        super().__init__(message)


class ConflictError(VaultError):
    """The note changed on disk since it was read and the change could not be merged."""


class TemplateError(ActaddError):
    """A Jinja template failed to load or render; the message names the file and line."""


class Cancelled(ActaddError):
    """A run was cancelled between two batches."""


class ZoteroError(ActaddError):
    """A Zotero source is unreachable, refused access, or does not know the item."""

    def __init__(self, message: str, *, source: str | None = None, item: str | None = None):
        self.source = source
        self.item = item
        parts = [p for p in (source, item) if p]
        super().__init__(f"{' '.join(parts)}: {message}" if parts else message)


@contextmanager
def note_context(path: str | Path) -> Iterator[None]:
    """Attach `path` to any ActaddError raised inside, unless one is attached already."""
    try:
        yield
    except ActaddError as error:
        if error.note is None:
            error.note = str(path)
        raise


class ScaleOutError(ActaddError):
    """Running on Ray failed: the package is missing, the cluster unreachable, or a shard kept being lost."""
