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

import re
from pathlib import Path

from actadd_notes.errors import VaultError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.data_files import is_wikilink, resolve_link
from actadd_notes.vault.notes import Note

__all__ = ["is_note_link", "read_pairs"]

_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[.\]\s+)?(.*)$")
_QUOTES = ("\"'`", "\"'`")
_PIPE = re.compile(r"(?<!\\)\|")  # a cell separator: a pipe not escaped with a backslash


def is_note_link(value: object) -> bool:
    return is_wikilink(value)


def read_pairs(config: VaultConfig, link: str) -> tuple[Path, list[tuple[str, str]]]:
    """The note `link` names and its (add, sub) pairs; VaultError when the note is missing,
    ambiguous or holds no pair."""
    path = resolve_link(config, link, note=True)
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
            cells = [cell.strip() for cell in _cells(text.strip().removeprefix("|").removesuffix("|"))]
        else:
            item = _ITEM.match(line)
            if item is None or not _PIPE.search(item.group(1)):
                continue
            cells = [cell.strip() for cell in _cells(item.group(1))]
        cells = [_unquoted(cell) for cell in cells]
        if len(cells) != 2 or not all(cells):
            raise VaultError(f"{name}: line {number}: {text!r} — a pair is two texts, `add | sub`", path=name)
        pairs.append((cells[0], cells[1]))
    return pairs


def _cells(row: str) -> list[str]:
    """A row split at its pipes; `\\|` is a pipe inside a cell, as Obsidian writes one in a table."""
    return [cell.replace("\\|", "|") for cell in _PIPE.split(row)]


def _unquoted(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == cell[-1] and cell[0] in _QUOTES[0]:
        return cell[1:-1]
    return cell
