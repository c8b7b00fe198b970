"""Read and write notes without losing or mangling a user's words.

A note is YAML frontmatter (Obsidian's properties) plus a Markdown body. The tool owns a
few property keys and a few regions of the body, marked the way Zotero Integration marks
its persist blocks:

    %% begin results %%
    …written by the tool…
    %% end results %%

Everything else is the user's and comes back byte for byte: the frontmatter is re-emitted
key by key, so an unchanged key keeps its exact text (comments, quotes, flow lists, odd
spacing), and a changed key keeps its end-of-line comment and the comment lines after it.
The spliced frontmatter is re-parsed and checked against the properties; should the
splice ever mean something else, ruamel's own dump of the whole mapping is used instead.

Regions are found structurally: a begin marker opens a line and its end marker closes one,
outside fenced code, one begin per name; marker text inside a line (a value the tool wrote,
say) is no marker, and marker lines inside content given to `set_region` are escaped.

Properties are parsed within bounds: at most `MAX_PROPERTIES_CHARS` of YAML, no aliases
(`*name`, whose expansion can grow exponentially), and any value the YAML library cannot
construct (`due: 2025-04-31`, `x: !!int`) is an `UnreadableProperties` error, never a crash.

Writes are atomic (temp file in the same folder, fsync, then an atomic swap) and
`update_note` compares and swaps: a note the user changed meanwhile is re-read and the change
re-applied. On Linux the swap is `renameat2(RENAME_EXCHANGE)`: the swapped-out file is checked
against what the change was based on and swapped back on a mismatch, so a save landing between
the re-read and the swap is never lost. Elsewhere (or where the file system refuses the exchange)
it is `os.replace` right after the re-read: a save in that instant can be lost.

A replace swaps the file under any process that holds the note open: what it writes through that
handle after the swap goes to the replaced file. So `update_note(append=True)` (the journal) adds a
change that only appends to the end of the note in place, with O_APPEND, re-reading through the
open file right before the write (`_append_if_unchanged`): a logger appending to the daily note
loses nothing.

Notes and templates are read only if they are plain files: opened without blocking and checked
with `fstat` first (`read_plain_file`), so a FIFO or a device in a note's place is a VaultError,
not a hang.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import math
import numbers
import os
import re
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.timestamp import TimeStamp
from ruamel.yaml.tokens import CommentToken

from actadd_notes.errors import ConflictError, VaultError
from actadd_notes.vault.paths import ensure_in_vault

__all__ = [
    "MAX_PROPERTIES_CHARS",
    "Note",
    "UnreadableProperties",
    "atomic_write_bytes",
    "create_note",
    "create_note_if_missing",
    "dump_yaml_value",
    "escape_markers",
    "read_plain_file",
    "rewrite_note",
    "update_note",
    "write_error_region",
]

MAX_PROPERTIES_CHARS = 256 * 1024
"""Properties longer than this are not parsed: no spec or result note comes near it."""

# Obsidian only takes frontmatter that opens on the very first line (a BOM aside).
_OPENING = re.compile(r"\ufeff?---[ \t]*(?:\r\n|\n)")
_CLOSING = re.compile(r"^---[ \t]*(?:\r\n|\n|\Z)", re.MULTILINE)
# A line as ruamel counts lines (its reader also breaks on NEL and the Unicode separators),
# so that its line numbers index this list.
_YAML_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_YAML_LINE = re.compile(r"[^\r\n\x85\u2028\u2029]*(?:\r\n|[\r\n\x85\u2028\u2029]|\Z)")
# A line as Markdown counts lines.
_MD_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_ANY_BREAK = re.compile(r"\r\n|\r|\n")
_CODE_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")

_QUIET_S = 0.02  # a note modified more recently than this may be mid-save: wait
_SETTLE_S = 0.25  # how long an empty or busy note is waited for before it is taken as it is
_POLL_S = 0.01
_RETRY_S = 0.02  # back-off step between compare-and-swap attempts
_APPEND_TRIES = 200  # re-reads of a note that other processes keep appending to, per attempt
_MAX_COPIES = 10_000  # `name 1.md` … before create_note gives up
_UNREADABLE = object()
_PER_THREAD = threading.local()
# What the YAML library raises on values it cannot construct (an impossible date, `!!int` with
# no digits, `!!bool maybe`) or on nesting deeper than Python's stack, besides YAMLError.
_CONSTRUCTION_ERRORS = (ValueError, IndexError, KeyError, TypeError, AttributeError, RecursionError)
_MARKER = r"%%[ \t]*{kind}[ \t]+{name}[ \t]*%%"
_ANY_MARKER = re.compile(r"%%[ \t]*(?:begin|end)[ \t]+[^%\n]*?[ \t]*%%")
_ESCAPED_PERCENTS = "%\u200b%"  # looks like `%%`, is neither an Obsidian comment nor a marker


class UnreadableProperties(VaultError):
    """A note's properties cannot be read: invalid YAML, too long, aliases, or a value the YAML
    library cannot construct. The note is never rewritten; a spec shows the error in its body."""


def escape_markers(text: str) -> str:
    """`text` with every region marker (`%% begin x %%`, `%% end x %%`) made inert, for text the
    tool puts into a note: it reads the same, but can neither open nor close a region."""
    return _ANY_MARKER.sub(lambda m: m.group().replace("%%", _ESCAPED_PERCENTS), text)


class Note:
    """A parsed Markdown note: round-trip `properties` (mutate in place), the `body`, and
    the `original` text, which `text()` reproduces exactly while nothing has changed."""

    def __init__(
        self,
        path: Path,
        properties: CommentedMap,
        body: str,
        original: str,
        *,
        newline: str = "\n",
        source: _Frontmatter | None = None,
    ):
        self.path = path
        self.properties = properties
        self.body = body
        self.original = original
        self.newline = newline  # what the note uses: text the tool adds follows it
        self._source = source

    @classmethod
    def read(cls, path: Path) -> Note:
        return cls.parse(_read_text(path), path)

    @classmethod
    def parse(cls, text: str, path: Path) -> Note:
        """Split frontmatter from body; VaultError naming note and line for invalid YAML."""
        first_break = text.find("\n")
        newline = "\r\n" if first_break > 0 and text[first_break - 1] == "\r" else "\n"
        opening = _OPENING.match(text)
        closing = _CLOSING.search(text, opening.end()) if opening else None
        if opening is None or closing is None:  # no frontmatter: properties start empty
            return cls(path, CommentedMap(), text, text, newline=newline)
        source = _Frontmatter.parse(opening.group(), text[opening.end() : closing.start()], closing.group(), path)
        properties = source.properties
        return cls(path, properties, text[closing.end() :], text, newline=newline, source=source)

    def __repr__(self) -> str:
        return f"Note({str(self.path)!r}, properties={list(self.properties)!r})"

    def text(self) -> str:
        """Frontmatter and body; unchanged parts are byte-identical to what was read."""
        return self._frontmatter_text() + self.body

    def set(self, key: Any, value: Any) -> None:
        """Set a property the Obsidian way (`dump_yaml_value`), keeping the user's quoting and
        list style; a value equal to the current one leaves the property as written."""
        new = dump_yaml_value(value)
        if key in self.properties:
            old = self.properties[key]
            if _same(old, new):
                return
            new = _styled_like(old, new)
        self.properties[key] = new

    def region(self, name: str) -> str | None:
        """The text between `%% begin NAME %%` and `%% end NAME %%`, without the line breaks
        that end the marker lines; None when the note has no such region."""
        span = self._region_span(name)
        return None if span is None else self.body[span[0] : span[1]]

    def set_region(self, name: str, content: str, *, heading: str | None = None) -> None:
        """Replace the region's content; a missing region is appended at the end of the body,
        under `## heading` when one is given."""
        content = _with_newline(_escape_own_markers(content, name), self.newline)
        span = self._region_span(name)
        if span is not None:
            start, stop = span
            if self.body[start:stop] != content:
                self.body = self.body[:start] + content + self.body[stop:]
            return
        nl = self.newline
        block = f"{nl}## {heading}{nl}" if heading else nl
        block += f"%% begin {name} %%{nl}{content}{nl}%% end {name} %%{nl}"
        self.body = _end_line(self.body, nl) + block

    def append_to_section(self, heading: str, text: str, *, level: int = 2) -> None:
        """Add `text` after the last non-blank line of the section under `heading` (any level,
        matched without case), before the next heading of that level or higher; a missing
        heading is created at the end of the body. Headings inside code blocks do not count."""
        nl = self.newline
        addition = _with_newline(text.rstrip("\r\n"), nl) + nl
        lines = _MD_LINE.findall(self.body)
        headings = list(_headings(lines))
        found = next(((i, lvl) for i, lvl, title in headings if title.casefold() == heading.casefold()), None)
        if found is None:
            self.body = _end_line(self.body, nl) + f"{nl}{'#' * level} {heading}{nl}{addition}"
            return
        index, found_level = found
        end = next((i for i, lvl, _ in headings if i > index and lvl <= found_level), len(lines))
        while end - 1 > index and not lines[end - 1].strip():
            end -= 1
        lines[end - 1] = _end_line(lines[end - 1], nl)
        lines.insert(end, addition)
        self.body = "".join(lines)

    def _region_span(self, name: str) -> tuple[int, int] | None:
        if not name.strip() or "%" in name or "\n" in name:
            raise ValueError(f"bad region name {name!r}")
        fenced = _fenced_spans(self.body)
        begins = [
            m for m in _marker_re("begin", name, at="start").finditer(self.body) if not _inside(m.start(), fenced)
        ]
        if not begins:
            return None
        if len(begins) > 1:
            raise VaultError(
                f"{self.path}: `%% begin {name} %%` opens {len(begins)} lines; keep one, so the tool "
                "knows which text is its own",
                path=self.path,
            )
        begin = begins[0]
        end = next(
            (
                m
                for m in _marker_re("end", name, at="end").finditer(self.body, begin.end())
                if not _inside(m.start(), fenced)
            ),
            None,
        )
        if end is None:
            raise VaultError(
                f"{self.path}: `%% begin {name} %%` has no `%% end {name} %%` after it; add it back "
                "where the tool's text ends",
                path=self.path,
            )
        start, stop = begin.end(), end.start()
        for ending in ("\r\n", "\n"):  # the begin marker's line break
            if self.body.startswith(ending, start):
                start += len(ending)
                break
        for ending in ("\r\n", "\n"):  # the line break before the end marker
            if stop - len(ending) >= start and self.body.endswith(ending, start, stop):
                stop -= len(ending)
                break
        return start, stop

    def _frontmatter_text(self) -> str:
        nl, source = self.newline, self._source
        if source is None:
            return f"---{nl}{_with_newline(_dump(self.properties), nl)}---{nl}" if self.properties else ""
        closing = source.closing if source.closing.endswith("\n") or not self.body else source.closing + nl
        if not source.changed(self.properties):
            return source.opening + source.yaml + closing
        spliced = source.splice(self.properties, nl)
        meant = _load_plain(spliced)  # checked against the values themselves: ruamel's own dump of a
        if meant is _UNREADABLE or not _same(meant, self.properties):  # float may round its last digit
            spliced = _with_newline(_dump(self.properties), nl)
        return source.opening + spliced + closing


@dataclass
class _Frontmatter:
    """The frontmatter as read, cut into lines per top-level key, to re-emit it key by key."""

    opening: str
    yaml: str
    closing: str
    properties: CommentedMap
    head: list[str]  # lines before the first key: comments, blank lines
    segments: dict[Any, list[str]]  # key -> its lines, up to the next key's line
    eol: dict[Any, tuple[str, str]]  # key -> (spaces, comment) ending the key's first line
    snapshot: CommentedMap  # the values as read, without comments: what "unchanged" means
    baseline: str  # the snapshot dumped

    @classmethod
    def parse(cls, opening: str, yaml_text: str, closing: str, path: Path) -> _Frontmatter:
        if len(yaml_text) > MAX_PROPERTIES_CHARS:
            raise UnreadableProperties(
                f"{path}: the properties are {len(yaml_text):,} characters long; the tool reads at most "
                f"{MAX_PROPERTIES_CHARS:,}",
                path=path,
            )
        try:
            return cls._parse(opening, yaml_text, closing, path)
        except YAMLError as error:
            raise _yaml_error(error, yaml_text, path) from None
        except _CONSTRUCTION_ERRORS as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else f"{type(error).__name__}: {error}"
            raise UnreadableProperties(f"{path}: cannot read the properties ({reason})", path=path) from None

    @classmethod
    def _parse(cls, opening: str, yaml_text: str, closing: str, path: Path) -> _Frontmatter:
        loaded = _yaml().load(yaml_text)
        if loaded is None:  # empty, or comments only
            loaded = CommentedMap()
        if not isinstance(loaded, CommentedMap):
            raise UnreadableProperties(f"{path}:2: the properties must be a mapping of keys to values", path=path)
        lines = _yaml_lines(yaml_text)
        starts = [loaded.lc.key(key)[0] for key in loaded]
        comments = _comment_starts(loaded)
        segments, eol = {}, {}
        for index, key in enumerate(loaded):
            start = starts[index]
            stop = starts[index + 1] if index + 1 < len(starts) else len(lines)  # where the next key starts
            segments[key] = lines[start:stop]
            column = comments.get(start)
            if column is not None and lines[start][column:].startswith("#"):
                first = lines[start].rstrip("\r\n\x85\u2028\u2029")
                before = first[:column]
                eol[key] = (before[len(before.rstrip()) :] or " ", first[column:])
        head = lines[: starts[0]] if starts else lines
        snapshot = _without_comments(loaded)
        return cls(opening, yaml_text, closing, loaded, head, segments, eol, snapshot, _dump(snapshot))

    def changed(self, properties: CommentedMap) -> bool:
        return _dump(_without_comments(properties)) != self.baseline

    def splice(self, properties: CommentedMap, nl: str) -> str:
        """The original text of unchanged keys, fresh text for changed and new ones; a removed
        key leaves its trailing comment lines, which may introduce the key after it."""
        order = {key: index for index, key in enumerate(self.segments)}
        removed = [key for key in self.segments if key not in properties]
        out = list(self.head)
        for key, value in properties.items():
            while removed and key in order and order[removed[0]] < order[key]:
                out += _trailing(self.segments[removed.pop(0)])
            dumped = _dump_key(key, value)
            if key in self.snapshot and _dump_key(key, self.snapshot[key]) == dumped:
                out += self.segments[key]
                continue
            fresh = _yaml_lines(_with_newline(dumped, nl))
            if key in self.eol:
                spaces, comment = self.eol[key]
                fresh[0] = fresh[0].rstrip("\r\n") + spaces + comment + nl
            out += fresh + _trailing(self.segments.get(key, []))
        for key in removed:
            out += _trailing(self.segments[key])
        return "".join(out)


def update_note(
    path: Path,
    change: Callable[[Note], None],
    *,
    vault: Path,
    attempts: int = 5,
    config_folder: str = ".obsidian",
    append: bool = False,
) -> Note:
    """Read the note, apply `change`, and replace the note atomically unless it changed on disk
    meanwhile; then re-read and re-apply `change`. Never overwrites text newer than what
    `change` saw; ConflictError after `attempts` tries. Returns the note as written
    (`original` is the text it was based on).

    With `append`, a change that only adds text at the end of the note (a journal line under the
    last heading) is appended in place, not by replacing the file, so a process that holds the
    note open to append to it (a logger, `tee -a`) keeps writing into the note: see
    `_append_if_unchanged`. A change elsewhere replaces the file as without `append`."""
    changed: list[Note] = []

    def render(note: Note) -> str:
        change(note)
        changed[:] = [note]
        return note.text()

    target = ensure_in_vault(vault, path, config_folder=config_folder)
    _compare_and_swap(
        target, lambda text: render(Note.parse(text, target)), attempts=attempts, create=False, append=append
    )
    return changed[0]


def rewrite_note(
    path: Path,
    render: Callable[[Note], str],
    *,
    vault: Path,
    attempts: int = 5,
    config_folder: str = ".obsidian",
) -> str:
    """Replace a tool-owned note with `render(current note)` under the same compare-and-swap
    as `update_note` (a missing note is created): `render` sees the latest text, to carry the
    user's regions over, and newer text is never overwritten. Returns the text written."""
    target = ensure_in_vault(vault, path, config_folder=config_folder)
    return _compare_and_swap(target, lambda text: render(Note.parse(text, target)), attempts=attempts, create=True)


def write_error_region(
    path: Path, name: str, content: str, *, vault: Path, heading: str = "Run error", config_folder: str = ".obsidian"
) -> str | None:
    """Put `content` into region `name` of a note whose properties cannot be parsed (an
    `UnreadableProperties` note), where the user will see it: the frontmatter is found by its
    `---` lines, not parsed, and kept byte for byte; only the body changes, under the same
    compare-and-swap as `update_note`. Returns the text written, None when there was nothing to change."""
    target = ensure_in_vault(vault, path, config_folder=config_folder)

    def render(text: str) -> str:
        opening = _OPENING.match(text)
        closing = _CLOSING.search(text, opening.end()) if opening else None
        cut = closing.end() if closing else 0
        note = Note(target, CommentedMap(), text[cut:], text[cut:], newline="\r\n" if "\r\n" in text else "\n")
        note.set_region(name, content, heading=heading)
        return text[:cut] + note.body

    before = _read_text(target)
    written = _compare_and_swap(target, render, attempts=5, create=False)
    return None if written == before else written


def _compare_and_swap(
    target: Path, render: Callable[[str], str], *, attempts: int, create: bool, append: bool = False
) -> str:
    """Write `render(current text)` over the note unless it changes meanwhile; then again. With
    `append`, a result that only adds to the end is appended in place instead."""
    for attempt in range(attempts):
        if create and not target.exists():
            text = render("")
            if _create_exclusive(target, text.encode()):
                return text
            continue  # created meanwhile: render again from what is there
        base = _read_settled(target)
        text = render(base)
        if text == base:
            return text
        if append and text.startswith(base):
            appended = _append_if_unchanged(target, base, text, render)
            if appended is not None:
                return appended
        elif _replace_if_unchanged(target, text, base):
            return text
        time.sleep(_RETRY_S * (attempt + 1))
    raise ConflictError(
        f"{target}: the note kept changing while the tool was updating it ({attempts} tries); nothing was written",
        path=target,
    )


def create_note(path: Path, text: str, *, vault: Path, config_folder: str = ".obsidian") -> Path:
    """Create a new note atomically and return its path: `path`, or, as Obsidian does when
    the name is taken, `name 1.md`, `name 2.md`, …"""
    target = ensure_in_vault(vault, path, config_folder=config_folder)
    for number in range(_MAX_COPIES):
        candidate = target.with_name(f"{target.stem} {number}{target.suffix}") if number else target
        if _create_exclusive(candidate, text.encode()):
            return candidate
    raise VaultError(f"{target}: {_MAX_COPIES} notes with this name exist already", path=target)


def create_note_if_missing(path: Path, text: str, *, vault: Path, config_folder: str = ".obsidian") -> bool:
    """Create the note atomically unless it exists (whoever made it); True if this call made it."""
    return _create_exclusive(ensure_in_vault(vault, path, config_folder=config_folder), text.encode())


def atomic_write_bytes(path: Path, data: bytes, *, vault: Path, config_folder: str = ".obsidian") -> None:
    """Replace a file in the vault atomically: for the tool's own artifacts (plots, arrays). A note
    the user may edit goes through `update_note` or `rewrite_note`, which never overwrite newer text."""
    target = ensure_in_vault(vault, path, config_folder=config_folder)
    with _vault_io(target, "write"):
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = _write_temp(target.parent, data, _mode(target))
        try:
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(target.parent)


def dump_yaml_value(value: Any) -> Any:
    """A Python value as Obsidian writes properties: ISO dates and datetimes (local, to the
    second), block lists, wikilinks double-quoted, multi-line text as a `|` block."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone().replace(tzinfo=None)
        stamp = TimeStamp(value.year, value.month, value.day, value.hour, value.minute, value.second)
        stamp._yaml["t"] = True  # ISO `T`, as Obsidian writes it, not ruamel's default space
        return stamp
    if isinstance(value, date):
        return value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, str):
        if "[[" in value:
            return DoubleQuotedScalarString(value)
        return LiteralScalarString(value) if "\n" in value else value
    if isinstance(value, Mapping):
        return CommentedMap((key, dump_yaml_value(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return CommentedSeq(dump_yaml_value(item) for item in value)
    raise TypeError(f"cannot store a {type(value).__name__} as a property: {value!r}")


# --- YAML ---------------------------------------------------------------------------


def _yaml() -> YAML:
    """This thread's round-trip YAML (instances are not thread-safe), in Obsidian's layout."""
    yaml = getattr(_PER_THREAD, "yaml", None)
    if yaml is None:
        yaml = _PER_THREAD.yaml = YAML(typ="rt")
        yaml.Composer = _NoAliasComposer
        yaml.preserve_quotes = True
        yaml.width = 1 << 30  # never fold a long value onto the next line
        yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


class _NoAliasComposer(Composer):
    """Refuses aliases: Obsidian writes none, and a few nested ones expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            mark = self.parser.peek_event().start_mark
            raise ComposerError(None, None, "YAML aliases (*name) are not read in properties", mark)
        return super().compose_node(parent, index)


def _dump(data: Any) -> str:
    stream = io.StringIO()
    _yaml().dump(data, stream)
    return stream.getvalue()


def _dump_key(key: Any, value: Any) -> str:
    single = CommentedMap()
    single[key] = _without_comments(value)
    return _dump(single)


def _without_comments(value: Any) -> Any:
    """A copy of a mapping or list without its comments, keeping flow style and scalar types."""
    if isinstance(value, Mapping):
        copy: CommentedMap | CommentedSeq = CommentedMap((k, _without_comments(v)) for k, v in value.items())
    elif isinstance(value, list):
        copy = CommentedSeq(_without_comments(item) for item in value)
    else:
        return value
    if isinstance(value, CommentedMap | CommentedSeq) and value.fa.flow_style():
        copy.fa.set_flow_style()
    return copy


def _load_plain(text: str) -> Any:
    """Plain Python data, to compare what two YAML texts mean; `_UNREADABLE` if the safe
    loader refuses it (invalid, or a custom tag)."""
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except (YAMLError, *_CONSTRUCTION_ERRORS):
        return _UNREADABLE
    return {} if data is None else data


def _yaml_error(error: YAMLError, yaml_text: str, path: Path) -> UnreadableProperties:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    # a reader error has no mark, only a character position
    line = mark.line if mark is not None else len(_YAML_BREAK.findall(yaml_text[: getattr(error, "position", 0)]))
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    # +2: lines count from 1, and the opening `---` is line 1
    return UnreadableProperties(f"{path}:{max(line, 0) + 2}: invalid YAML in the properties: {problem}", path=path)


def _yaml_lines(text: str) -> list[str]:
    """Lines with their line breaks, numbered as ruamel numbers them."""
    return [line for line in _YAML_LINE.findall(text) if line]


def _comment_starts(node: Any, found: dict[int, int] | None = None) -> dict[int, int]:
    """Line -> column of the first comment starting on that line, anywhere in the loaded data."""
    found = {} if found is None else found
    ca = getattr(node, "ca", None)
    if ca is not None:
        for token in _tokens([ca.comment, list(ca.items.values()), ca.end]):
            mark = token.start_mark
            if mark is not None:
                found[mark.line] = min(mark.column, found.get(mark.line, mark.column))
    children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else ()
    for child in children:
        _comment_starts(child, found)
    return found


def _tokens(nested: Any) -> Iterator[CommentToken]:
    if isinstance(nested, CommentToken):
        yield nested
    elif isinstance(nested, list):
        for item in nested:
            yield from _tokens(item)


def _trailing(segment: list[str]) -> list[str]:
    """The blank and column-0 comment lines ending a key's segment: the user's, not the value's
    (a value's own lines are indented, so a `#` at column 0 cannot belong to it)."""
    keep = len(segment)
    while keep > 1 and (not segment[keep - 1].strip() or segment[keep - 1].startswith("#")):
        keep -= 1
    return segment[keep:]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind: 1, 1.0 and True differ; NaN equals NaN."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _kind(a) is not _kind(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _kind(value: Any) -> type:
    for kind in (bool, datetime, date, int, float, str):
        if isinstance(value, kind):
            return kind
    return type(value)


def _styled_like(old: Any, new: Any) -> Any:
    """`new`, quoted like `old` if both are strings, in flow style if both are lists and `old` was."""
    if type(new) is str and type(old) in (SingleQuotedScalarString, DoubleQuotedScalarString):
        return type(old)(new)
    if isinstance(old, CommentedSeq) and isinstance(new, CommentedSeq) and old.fa.flow_style():
        new.fa.set_flow_style()
    return new


# --- text helpers ---------------------------------------------------------------------


def _with_newline(text: str, nl: str) -> str:
    """`text` with the note's line breaks, whatever it came with (a lone CR is a line break too)."""
    return _ANY_BREAK.sub(nl, text)


def _end_line(text: str, nl: str) -> str:
    """`text` ending with a line break, unless it is empty."""
    return text + nl if text and not text.endswith(("\n", "\r")) else text


def _marker_re(kind: str, name: str, *, at: str) -> re.Pattern[str]:
    """A region marker that opens a line (`at="start"`) or closes one (`at="end"`)."""
    marker = _MARKER.format(kind=kind, name=re.escape(name))
    return re.compile(rf"^[ \t]*{marker}" if at == "start" else rf"{marker}[ \t]*(?=\r?\n|\Z)", re.MULTILINE)


def _escape_own_markers(content: str, name: str) -> str:
    """Content with the markers of region `name` made inert, so it cannot end its own region."""
    own = re.compile(_MARKER.format(kind="(?:begin|end)", name=re.escape(name)))
    return own.sub(lambda m: m.group().replace("%%", _ESCAPED_PERCENTS), content)


def _fenced_lines(lines: list[str]) -> set[int]:
    """Indices of the lines in fenced code blocks, fences included; an unclosed fence runs to the end."""
    fenced: set[int] = set()
    fence = ""
    for index, line in enumerate(lines):
        stripped = line.rstrip("\r\n")
        opener = _CODE_FENCE.match(stripped)
        if fence:
            fenced.add(index)
            marker = opener.group(1) if opener else ""
            # a closing fence: the opener's character, at least as long, nothing after it
            if opener and marker[0] == fence[0] and len(marker) >= len(fence) and not stripped[opener.end() :].strip():
                fence = ""
        elif opener:
            fenced.add(index)
            fence = opener.group(1)
    return fenced


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the fenced code blocks' lines."""
    spans, offset = [], 0
    lines = _MD_LINE.findall(text)
    fenced = _fenced_lines(lines)
    for index, line in enumerate(lines):
        if index in fenced:
            spans.append((offset, offset + len(line)))
        offset += len(line)
    return spans


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _headings(lines: list[str]) -> Iterator[tuple[int, int, str]]:
    """(line index, level, title) of each ATX heading outside fenced code blocks."""
    fenced = _fenced_lines(lines)
    for index, line in enumerate(lines):
        heading = None if index in fenced else _ATX_HEADING.fullmatch(line.rstrip("\r\n"))
        if heading:
            yield index, len(heading.group(1)), (heading.group(2) or "").strip()


# --- files ----------------------------------------------------------------------------


@contextlib.contextmanager
def _vault_io(path: Path, doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise VaultError(f"{path}: cannot {doing}: {error.strerror or error}", path=path) from error


def read_plain_file(path: Path) -> bytes:
    """The bytes of a plain file (through a link, as any read). A FIFO, a device or a folder in a
    note's or template's place is a VaultError: opened without blocking and checked before a byte is
    read, so a FIFO cannot hang the tool nor `/dev/zero` fill its memory. FileNotFoundError, and any
    other OSError, as they are."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VaultError(f"{path}: not a plain file (a FIFO, a device or a folder); the tool reads none", path=path)
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_text(path: Path) -> str:
    """The exact text: bytes decoded as UTF-8, line endings untranslated."""
    try:
        data = read_plain_file(path)
    except FileNotFoundError:
        raise VaultError(f"{path}: no such note", path=path) from None
    except OSError as error:
        raise VaultError(f"{path}: cannot read: {error.strerror or error}", path=path) from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise VaultError(
            f"{path}: not UTF-8 text (an invalid byte at offset {error.start}); the tool reads and writes "
            "notes as UTF-8 only, so it leaves this one alone: save it as UTF-8",
            path=path,
        ) from None


def _read_settled(path: Path) -> str:
    """Read a note that is not mid-save. Obsidian saves by truncating and then writing, so an
    empty or just-modified note is read again after a pause, for up to `_SETTLE_S`."""
    deadline = time.monotonic() + _SETTLE_S
    while True:
        text = _read_text(path)
        with _vault_io(path, "read"):
            quiet = time.time() - path.stat().st_mtime >= _QUIET_S
        if (text and quiet) or time.monotonic() >= deadline:
            return text
        time.sleep(_POLL_S)


def _replace_if_unchanged(target: Path, text: str, base: str) -> bool:
    """Write `text` over `target` if it still holds `base`; False (the note as it was) if not."""
    with _vault_io(target, "write"):
        temp = _write_temp(target.parent, text.encode(), _mode(target))
        try:
            if _read_text(target) != base:
                return False
            if _exchange(temp, target):
                if not _swapped_out_unchanged(temp, base.encode()):
                    _swap_back(temp, target, os.lstat(target))
                    return False
            else:  # no atomic exchange here: a save between the read above and this replace is lost
                os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
    return True


def _append_if_unchanged(target: Path, base: str, text: str, render: Callable[[str], str]) -> str | None:
    """Append `text[len(base):]` to the note in place (O_APPEND) if it still holds `base`: re-read
    through the open file right before the write, so the check and the append are microseconds
    apart. A note that has only grown meanwhile (another process appended lines) is rendered
    again from what it holds now, up to `_APPEND_TRIES` times; anything else (a save, a truncation,
    a change the new render puts elsewhere than the end) returns None, for the caller to start over.

    Another process appending to the note loses nothing: its lines and ours both go to the end of
    the same file. What can be lost is our own addition, never the user's text: a save of text read
    before our append (by rename, or by truncating and writing) drops it. One that lands before the
    check after our write is seen, and the addition made again; one that lands later drops it for good.

    A note we may not open for writing (read-only) is replaced instead, as without `append`."""
    with _vault_io(target, "write"):
        try:
            fd = os.open(target, os.O_RDWR | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
        except PermissionError:
            return text if _replace_if_unchanged(target, text, base) else None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VaultError(f"{target}: not a plain file (a FIFO, a device or a folder); the tool reads none")
            expected = base.encode()
            for _ in range(_APPEND_TRIES):
                current = _read_all_at(fd)
                if current != expected:
                    if not current.startswith(expected):  # saved, truncated or rewritten: start over
                        return None
                    try:
                        base = current.decode("utf-8")
                    except UnicodeDecodeError:  # an append caught mid-character
                        return None
                    expected, text = current, render(base)
                    if text == base:
                        return text
                    if not text.startswith(base):
                        return None
                    continue  # check again, right before writing
                addition = text[len(base) :].encode()
                written = 0
                while written < len(addition):
                    written += os.write(fd, addition[written:])
                os.fsync(fd)
                # what the note holds now, through its name: a save around our write may have replaced
                # or overwritten the file without our text (then start over), or kept it
                if addition not in read_plain_file(target)[len(expected) :]:
                    return None
                return text
            return None
        finally:
            os.close(fd)


def _swapped_out_unchanged(swapped: Path, base: bytes) -> bool:
    """Whether the file swapped out of the note's place is `base`, and stays so for `_QUIET_S`: a
    writer that opened the note just before the swap writes into this file, not the note."""
    fd = os.open(swapped, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        before = os.fstat(fd)
        if _read_all(fd) != base:
            return False
        time.sleep(_QUIET_S)
        after = os.fstat(fd)
        return (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ctime_ns,
        )
    finally:
        os.close(fd)


def _swap_back(swapped: Path, target: Path, ours: os.stat_result) -> None:
    """Put the user's file (now at `swapped`) back in the note's place. Should the user have saved
    once more meanwhile (by rename, so the note is no longer our file `ours`), that newest save
    is what the note keeps."""
    _exchange(swapped, target)
    now = os.lstat(swapped)
    if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):  # we swapped out a newer save
        _exchange(swapped, target)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_all_at(fd: int) -> bytes:
    """The whole file from its start, whatever the descriptor's position."""
    os.lseek(fd, 0, os.SEEK_SET)
    return _read_all(fd)


def _renameat2() -> Callable[..., int] | None:
    """glibc's renameat2, where there is one (Linux, glibc ≥ 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (both must exist); False where the OS or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(b))


def _create_exclusive(target: Path, data: bytes) -> bool:
    """Reserve `target` with O_EXCL, then move the full text over it: readers see no note,
    then an empty one for an instant, then the whole note, never a half-written one."""
    with _vault_io(target, "create"):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            return False
        try:
            temp = _write_temp(target.parent, data, None)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                if target.stat().st_size == 0:  # still our empty reservation
                    target.unlink()
            raise
        _fsync_dir(target.parent)
    return True


def _write_temp(folder: Path, data: bytes, mode: int | None) -> Path:
    """A synced temp file beside the target (a dot file: Obsidian and the watcher ignore it)."""
    temp = folder / f".actadd-{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temp, mode)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _mode(path: Path) -> int | None:
    """The permission bits of an existing file, so replacing it keeps them."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; best effort (some file systems refuse to sync a folder)."""
    if hasattr(os, "O_DIRECTORY"):
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
