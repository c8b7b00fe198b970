"""Which files of a vault are notes the tool may act on, found without parsing what cannot be theirs.

A vault is mostly other notes, and any of them may hold YAML that is costly or impossible to
parse. So a scan (`spec_notes`, `result_notes`) looks at names first (`NoteFilter`: Obsidian's
hidden files, app, sync and editor noise, sync tools' conflict copies), then at the file (a
plain file, or a link to one inside the vault), then at the text: a note whose frontmatter has
no `type: actadd-experiment` (or `actadd-result`) line is never parsed. Only candidates are
parsed, within the bounds of `Note.parse` (size, no aliases).

Obsidian hides every file and folder whose name starts with a dot; sync tools leave copies
beside the original: Syncthing `x.sync-conflict-….md`, Dropbox `x (… conflicted copy ….md`,
Obsidian Sync `x (conflict ….md`, iCloud `x 2.md`, OneDrive `x-DESKTOP-1234.md`, and the
`x (1).md` of many. The last three are copies only while `x.md` exists beside them (a note may
well be called `Chapter 2`), so `copy_of` checks the folder.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from actadd_notes.errors import VaultError
from actadd_notes.vault.notes import MAX_PROPERTIES_CHARS, Note, UnreadableProperties

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = [
    "RESULT_TYPE",
    "SPEC_TYPE",
    "NoteFilter",
    "Spec",
    "copy_of",
    "examine_spec",
    "file_problem",
    "read_typed_note",
    "result_notes",
    "scan_specs",
    "spec_notes",
    "spec_status",
]

SPEC_TYPE = "actadd-experiment"
RESULT_TYPE = "actadd-result"
# Frontmatter starts on the first line (a BOM aside) and ends at the next `---` line; it is looked
# for within what `Note.parse` would read at most, in UTF-8.
_HEAD_BYTES = 4 * MAX_PROPERTIES_CHARS + 16
_OPENING = re.compile(r"\A\ufeff?---[ \t]*\r?\n")
_FRONTMATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)^---[ \t]*$", re.DOTALL | re.MULTILINE)
# Copies that are copies only beside their original.
_COPY_NAMES = (
    re.compile(r"(?P<stem>.+) (?:[2-9]|[1-9]\d+)"),  # iCloud: `x 2`
    re.compile(r"(?P<stem>.+?) ?\(\d+\)"),  # `x (1)`, `x(1)`
    re.compile(r"(?P<stem>.+?)-[A-Z0-9][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*"),  # OneDrive: `x-DESKTOP-1234`
)


def _type_line(kind: str) -> re.Pattern[str]:
    return re.compile(rf"^[\"']?type[\"']?[ \t]*:.*{re.escape(kind)}", re.MULTILINE)


_TYPE_LINES = {kind: _type_line(kind) for kind in (SPEC_TYPE, RESULT_TYPE)}


class NoteFilter:
    """Keep notes, drop what Obsidian hides and app/sync/editor noise. A callable:
    `filter(change, path) -> keep?` (`change` is unused: every kind of change is judged alike).

    A path part starting with a dot is hidden (below `root`, when given: the vault itself may
    live in a dot folder). Extend the defaults per instance (`extra_ignore_dirs=`,
    `extra_ignore_patterns=`, `ignore_paths=`) or per subclass (override the class-level
    tuples). Directory names are matched against every part of the path; patterns are
    shell-style, matched case-insensitively against the file name. `suffixes` keeps only those
    extensions (case-insensitive); an empty tuple keeps every file.
    """

    ignore_dirs: ClassVar[tuple[str, ...]] = (
        ".obsidian",  # Obsidian's config (hidden anyway: named here for paths without a root)
        ".trash",  # Obsidian's in-vault trash
        ".git",
        ".hg",
        ".svn",
        ".actadd-notes",  # our own lock and claim files
        ".stversions",  # Syncthing
        ".stfolder",
        ".Trash",  # desktop trash folders on mounted volumes
        ".Trashes",
        ".venv",
        "__pycache__",
        "node_modules",
    )
    ignore_patterns: ClassVar[tuple[str, ...]] = (
        ".*",  # hidden: Obsidian shows no dot file (editor temp files, our own temp files)
        "*.swp",  # vim
        "*.swo",
        "*.swx",
        "*~",  # emacs, gedit, many others
        "#*#",  # emacs autosave
        "*.tmp",
        "*.part",
        "*.crswap",  # Chrome's File System Access API
        "*.sync-conflict-*",  # Syncthing conflicts
        "* (*conflicted copy*",  # Dropbox conflicts (`x (Jane's conflicted copy 2024-01-01).md`)
        "* (conflict*",  # Obsidian Sync conflicts (`x (conflict 2026-12-01 120000).md`)
        "* (case conflict*",  # Dropbox
        "*.icloud",  # iCloud placeholders for evicted files
        "~$*",  # Microsoft Office owner files
        "Thumbs.db",
        "desktop.ini",
    )

    def __init__(
        self,
        *,
        root: Path | None = None,
        extra_ignore_dirs: Iterable[str] = (),
        extra_ignore_patterns: Iterable[str] = (),
        ignore_paths: Iterable[str | Path] = (),
        suffixes: Iterable[str] = (".md",),
    ):
        self._root = _resolved(Path(root)) if root is not None else None
        self._dirs = frozenset((*self.ignore_dirs, *extra_ignore_dirs))
        patterns = [p.lower() for p in (*self.ignore_patterns, *extra_ignore_patterns)]
        self._patterns = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        self._paths = tuple(_resolved(Path(p)) for p in ignore_paths)
        self._suffixes = frozenset(s.lower() for s in suffixes)

    def __call__(self, change: object, path: Path) -> bool:
        if self._suffixes and path.suffix.lower() not in self._suffixes:
            return False
        if self._patterns is not None and self._patterns.match(path.name.lower()):
            return False
        if any(part in self._dirs for part in path.parts[:-1]):
            return False
        if self._root is not None and _hidden_below(path, self._root):
            return False
        return not any(path == p or path.is_relative_to(p) for p in self._paths)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={self._root}, ignore_dirs={sorted(self._dirs)}, "
            f"ignore_paths={[str(p) for p in self._paths]}, suffixes={sorted(self._suffixes)})"
        )


def copy_of(path: Path) -> Path | None:
    """The original beside `path` when `path` is named like a sync tool's copy of it
    (`x 2.md`, `x (1).md`, `x-DESKTOP-1234.md` next to `x.md`); else None."""
    for pattern in _COPY_NAMES:
        match = pattern.fullmatch(path.stem)
        if match:
            original = path.with_name(match["stem"] + path.suffix)
            if os.path.lexists(original):
                return original
    return None


def file_problem(config: VaultConfig, path: Path) -> str | None:
    """Why the file at `path` (absolute, in the vault) must not be read as a note, or None: it
    must be a plain file, or a link to one inside the vault and outside what Obsidian hides."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            root = _resolved(config.root)
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(root) or _hidden_below(target, root):
                return f"a link to {target}, outside the vault or where Obsidian hides files"
            info = os.stat(target)
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    return None if stat.S_ISREG(info.st_mode) else "not a plain file"


def read_typed_note(path: Path, kind: str) -> Note | None:
    """The note at `path` if its frontmatter declares `type: kind` (parsed only then); None if
    it does not. VaultError (an `UnreadableProperties` among others) if it does and cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block a scan
        try:
            head = os.read(fd, _HEAD_BYTES)
        finally:
            os.close(fd)
    except OSError as error:
        raise VaultError(f"{path}: cannot read: {error.strerror or error}", path=path) from error
    text = head.decode("utf-8", errors="replace")
    frontmatter = _FRONTMATTER.match(text)
    if frontmatter is None and _OPENING.match(text) and _TYPE_LINES[kind].search(text) and len(head) < _HEAD_BYTES:
        raise UnreadableProperties(
            f"{path}: its properties open with --- but no line --- closes them, so Obsidian shows them as text "
            "and the tool cannot read them — add a line --- after the last property",
            path=path,
        )
    if frontmatter is None or not _TYPE_LINES[kind].search(frontmatter.group(1)):
        return None
    note = Note.read(path)
    return note if note.properties.get("type") == kind else None


@dataclass(frozen=True)
class Spec:
    """A spec note as a scan finds it: its `status`, or why it is `skipped` (never run); `error`
    when the reason is that it cannot be read (a save in progress, perhaps: worth a second look)."""

    path: Path
    status: str | None = None
    skipped: str | None = None
    error: VaultError | None = None


def examine_spec(config: VaultConfig, path: Path) -> Spec | None:
    """What the note at `path` is to the watcher: None when it is no spec (or not for the tool:
    hidden, noise), else a `Spec` with its status or why it is passed over (a link out of the
    vault, a sync copy, properties that cannot be read). Parses only what declares itself a spec."""
    if not _note_filter(config)(None, path):
        return None
    problem = file_problem(config, path)
    if problem is not None:
        return Spec(path, skipped=problem)
    try:
        note = read_typed_note(path, SPEC_TYPE)
    except VaultError as error:
        return Spec(path, skipped=str(error), error=error)
    if note is None:
        return None
    original = copy_of(path)
    if original is not None:
        return Spec(path, skipped=f"named like a sync tool's copy of {original.name}; rename it to run it")
    status = note.properties.get("status")
    return Spec(path, status=status if isinstance(status, str) else None)


def scan_specs(config: VaultConfig) -> list[Spec]:
    """Every spec note of the vault outside the results and artifacts folders, sorted by path,
    with those passed over (see `examine_spec`)."""
    skip = (config.path(config.results_folder), config.path(config.artifacts_folder))
    return [spec for path in _markdown_files(config.root, skip) if (spec := examine_spec(config, path))]


def spec_notes(config: VaultConfig) -> list[tuple[Path, str | None]]:
    """Every spec note the tool may run, and its status."""
    return [(spec.path, spec.status) for spec in scan_specs(config) if spec.skipped is None]


def spec_status(config: VaultConfig, path: Path) -> str | None:
    """The status of the spec note at `path`; None when it is no spec the tool may run (or cannot
    be read now). The one status read the watcher and the jobs share."""
    spec = examine_spec(config, path)
    return spec.status if spec is not None else None


def result_notes(config: VaultConfig) -> list[tuple[Path, dict[str, Any]]]:
    """The properties of every readable result note (`type: actadd-result`) in the results
    folder, sorted by path; notes that cannot be read are passed over."""
    note_filter = _note_filter(config)
    found = []
    for path in _markdown_files(config.path(config.results_folder), ()):
        if not note_filter(None, path) or file_problem(config, path) is not None or copy_of(path):
            continue
        try:
            note = read_typed_note(path, RESULT_TYPE)
        except VaultError:
            continue
        if note is not None:
            found.append((path, dict(note.properties)))
    return found


def _markdown_files(top: Path, skip: Iterable[Path]) -> list[Path]:
    """Markdown files under `top`, sorted; hidden folders, the folders in `skip` and linked
    folders (which the file-system watcher does not follow either) are not entered."""
    if not top.is_dir():
        return []
    pruned = {_resolved(Path(p)) for p in skip}
    found = []
    for folder, dirs, files in os.walk(_resolved(top)):
        here = Path(folder)
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and d not in NoteFilter.ignore_dirs and here / d not in pruned
        ]
        found += [here / name for name in files if name.lower().endswith(".md")]
    return sorted(found)


def _hidden_below(path: Path, root: Path) -> bool:
    """Whether a part of `path` below `root` starts with a dot (what Obsidian hides)."""
    return path.is_relative_to(root) and any(part.startswith(".") for part in path.relative_to(root).parts)


def _note_filter(config: VaultConfig) -> NoteFilter:
    return _filter_for(_resolved(config.root))


@functools.lru_cache(maxsize=16)
def _filter_for(root: Path) -> NoteFilter:
    """One filter per vault: building one compiles every pattern."""
    return NoteFilter(root=root)


def _resolved(path: Path) -> Path:
    """Absolute, with every folder resolved; a symlinked note keeps its own name."""
    path = path if path.is_absolute() else Path.cwd() / path
    return Path(os.path.realpath(path.parent)) / path.name
