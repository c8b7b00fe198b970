"""The vault layer: safe reads and writes of notes, paths, settings, templates and the journal.

The other vault modules (literature, scan, moment) are imported from their own modules, so
that importing this package stays cheap; Zotero lives in `actadd_notes.zotero`, the watcher,
its lock and its event source in `actadd_notes.watcher`.
"""

from __future__ import annotations

from actadd_notes.vault.config import VaultConfig, find_vault_root
from actadd_notes.vault.journal import append_journal_entry, daily_note_path, journal_entry
from actadd_notes.vault.notes import (
    Note,
    atomic_write_bytes,
    create_note,
    create_note_if_missing,
    dump_yaml_value,
    rewrite_note,
    update_note,
)
from actadd_notes.vault.paths import ensure_in_vault, resolve_in_vault, safe_filename
from actadd_notes.vault.templates import TemplateRenderer

__all__ = [
    "Note",
    "TemplateRenderer",
    "VaultConfig",
    "append_journal_entry",
    "atomic_write_bytes",
    "create_note",
    "create_note_if_missing",
    "daily_note_path",
    "dump_yaml_value",
    "ensure_in_vault",
    "find_vault_root",
    "journal_entry",
    "resolve_in_vault",
    "rewrite_note",
    "safe_filename",
    "update_note",
]
