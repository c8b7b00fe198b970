"""Contrast pairs kept as a note: a Markdown table or list of `add | sub` lines, named in a spec by
a wikilink (`pairs: "[[Pairs/sentiment]]"`), so a pair set is shared, versioned and cited like
any other note.

    | add | sub |                   - I love this | I hate this
    |---|---|                       - Wonderful | Terrible
    | I love this | I hate this |
    | Wonderful | Terrible |

A table's first row is its header when a `|---|` row follows it. Lines of other shapes (prose,
headings, other lists) are left alone; a table row or list item that holds a `|` but not exactly
two texts is an error naming its line.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from actadd_notes.errors import VaultError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note
from actadd_notes.vault.paths import resolve_in_vault
from actadd_notes.vault.scan import NoteFilter

__all__ = ["is_note_link", "read_pairs"]

_LINK = re.compile(r"^\[\[([^\[\]|#^]+)(?:#[^\[\]|]*)?(?:\|[^\[\]]*)?\]\]$")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[.\]\s+)?(.*)$")
_QUOTES = ("\"'`", "\"'`")


def is_note_link(value: object) -> bool:
    return isinstance(value, str) and _LINK.match(value.strip()) is not None


def read_pairs(config: VaultConfig, link: str) -> tuple[Path, list[tuple[str, str]]]:
    """The note `link` names and its (add, sub) pairs; VaultError when the note is missing,
    ambiguous or holds no pair."""
    path = _resolve(config, link)
    pairs = parse_pairs(Note.read(path).body, path.relative_to(config.root).as_posix())
    if not pairs:
        raise VaultError(
            f"{link}: no pairs in the note — write a table `| add | sub |` or lines `- add | sub`", path=path
        )
    return path, pairs


def parse_pairs(body: str, name: str) -> list[tuple[str, str]]:
    """The pairs of a note body (see the module docstring)."""
    lines = body.splitlines()
    pairs = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("|"):
            if _SEPARATOR.match(text):
                continue
            following = lines[number].strip() if number < len(lines) else ""
            if _SEPARATOR.match(following):  # a header row
                continue
            cells = [cell.strip() for cell in text.strip("|").split("|")]
        else:
            item = _ITEM.match(line)
            if item is None or "|" not in item.group(1):
                continue
            cells = [cell.strip() for cell in item.group(1).split("|")]
        cells = [_unquoted(cell) for cell in cells]
        if len(cells) != 2 or not all(cells):
            raise VaultError(f"{name}: line {number}: {text!r} — a pair is two texts, `add | sub`", path=name)
        pairs.append((cells[0], cells[1]))
    return pairs


def _unquoted(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == cell[-1] and cell[0] in _QUOTES[0]:
        return cell[1:-1]
    return cell


def _resolve(config: VaultConfig, link: str) -> Path:
    """Obsidian's resolution of `[[target]]`: a vault path when the target has a folder, else the
    one note of that name anywhere in the vault (hidden files and sync copies never count)."""
    found = _LINK.match(link.strip())
    if found is None:
        raise VaultError(f"{link!r} is not a wikilink like [[Pairs/sentiment]]", path=link)
    target = found.group(1).strip().removesuffix(".md")
    if "/" in target:
        path = resolve_in_vault(config.root, target + ".md", config_folder=config.config_folder)
        if not path.is_file():
            raise VaultError(f"{link}: no note {target}.md in the vault", path=target)
        return path
    keep = NoteFilter(root=config.root)
    matches = [p for p in sorted(config.root.rglob(glob.escape(target) + ".md")) if keep(None, p) and p.is_file()]
    if not matches:
        raise VaultError(f"{link}: no note named {target}.md in the vault", path=target)
    if len(matches) > 1:
        names = ", ".join(p.relative_to(config.root).as_posix() for p in matches)
        raise VaultError(f"{link}: several notes are named {target}.md ({names}) — link with its folder", path=target)
    return resolve_in_vault(config.root, matches[0].relative_to(config.root), config_folder=config.config_folder)
