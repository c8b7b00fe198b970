"""Better BibTeX exports read offline: Better CSL JSON, BetterBibTeX JSON and BibTeX/BibLaTeX.

An export is parsed once per version (its path, mtime, size and inode) for the whole process,
however many sources and lookups ask: jobs build fresh sources for every run, and a 15 MB
.bib takes tens of seconds to parse, so a parse per lookup (or per missing citekey) would cost
minutes. A parse has a deadline and a size cap (`PARSE_DEADLINE_S`, `MAX_EXPORT_BYTES`), and
its outcome, a failure included, is kept until the file changes. An entry that cannot be read
is kept as malformed with the reason, never dropped: a lookup of its citekey says why, a
lookup of any other missing one says how many entries were skipped, and `doctor` lists them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from actadd_notes.errors import ZoteroError
from actadd_notes.zotero.items import Creator, ZoteroItem, attachment_from, citekey_of, item_from_zotero, year_of

if TYPE_CHECKING:
    from actadd_notes.zotero.api import Clock

__all__ = ["MAX_BIB_ENTRY_CHARS", "MAX_EXPORT_BYTES", "PARSE_DEADLINE_S", "BetterBibTexSource", "ExportContents"]

MAX_EXPORT_BYTES = 128 * 2**20  # a library of tens of thousands of items with abstracts is tens of MB
PARSE_DEADLINE_S = 120.0  # a 15 MB .bib parses in about 5 s here (bibtexparser: 32 s; 138 s on a user's machine)
MAX_BIB_ENTRY_CHARS = 2**20  # one entry; a longer one is reported malformed, not parsed
_CACHED_EXPORTS = 8  # distinct export files kept parsed; a vault lists one or two


@dataclass(frozen=True)
class ExportContents:
    """What an export holds: its items by citekey, and the entries that could not be read,
    by citekey where one could be found (else `entry N`), with the reason."""

    items: Mapping[str, ZoteroItem]
    malformed: Mapping[str, str]


class _TooSlow(Exception):
    """The parse passed its deadline."""


_Version = tuple[int, int, int, int]


class _ParsedExports:
    """Parsed exports by path, each with the version it was parsed from: shared by every
    source in the process, bounded in number, and parsed under a lock so two lookups of one
    new version parse it once."""

    def __init__(self, size: int):
        self._size = size
        self._lock = threading.Lock()
        self._parsed: OrderedDict[str, tuple[_Version, ExportContents | str]] = OrderedDict()

    def get(self, path: str, version: _Version, parse: Callable[[], ExportContents | str]) -> ExportContents | str:
        """The cached outcome for this version, else `parse()`'s (a str is the failure to
        report); an exception from `parse` (the file could not be read) is not cached."""
        with self._lock:
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == version:
                self._parsed.move_to_end(path)
                return cached[1]
            outcome = parse()
            self._parsed[path] = (version, outcome)
            self._parsed.move_to_end(path)
            while len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
            return outcome


_EXPORTS = _ParsedExports(_CACHED_EXPORTS)


class BetterBibTexSource:
    """A Better BibTeX export, read offline: Better CSL JSON (a list of CSL items with
    `citation-key`), BetterBibTeX JSON (`{"items": [...]}`, Zotero fields plus `citationKey`,
    `notes` and `attachments`) or BibTeX/BibLaTeX `.bib`.

    Items from here have no annotations: Zotero does not give annotations to export
    translators, so no BBT export format carries them (only BBT's JSON-RPC does). The file
    is parsed again when it changes, so a BBT auto-export keeps the source current.
    """

    def __init__(self, path: Path, *, clock: Clock | None = None, deadline_s: float = PARSE_DEADLINE_S):
        from actadd_notes.zotero.api import SystemClock

        self.path = Path(path)
        self.name = f"bbt:{self.path.name}"
        self._clock = clock or SystemClock()
        self._deadline_s = deadline_s

    def find(self, citekey: str) -> ZoteroItem:
        contents = self._load()
        if isinstance(contents, str):
            raise ZoteroError(contents, source=self.name, item=citekey)
        if citekey in contents.items:
            return contents.items[citekey]
        if citekey in contents.malformed:
            reason = contents.malformed[citekey]
            raise ZoteroError(f"its entry in {self.path} is malformed: {reason}", source=self.name, item=citekey)
        raise ZoteroError(f"not in {self.path}{_skipped(contents)}", source=self.name, item=citekey)

    def contents(self) -> ExportContents:
        """Everything the export holds (parsed once per version); ZoteroError if it cannot be
        read at all. For `doctor`, which must not call a corrupt export fine."""
        contents = self._load()
        if isinstance(contents, str):
            raise ZoteroError(contents, source=self.name)
        return contents

    def _load(self) -> ExportContents | str:
        """The parsed export for the file as it is now, or why it cannot be read."""
        try:
            with open(self.path, "rb") as file:
                stat = os.fstat(file.fileno())
                version = (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev)
                return _EXPORTS.get(str(self.path.absolute()), version, lambda: self._parse(file, stat.st_size))
        except OSError as error:
            return (
                f"cannot read the export {self.path}: {error.strerror}; point a Better BibTeX auto-export "
                "there or fix bbt_exports"
            )

    def _parse(self, file: IO[bytes], size: int) -> ExportContents | str:
        """The export's contents, or why it has none: too large, not UTF-8, not JSON, nested
        too deeply, of another shape, or not parsed within the deadline."""
        limit = f"{MAX_EXPORT_BYTES / 2**20:g} MiB"
        data = file.read(MAX_EXPORT_BYTES + 1) if size <= MAX_EXPORT_BYTES else b""
        if size > MAX_EXPORT_BYTES or len(data) > MAX_EXPORT_BYTES:
            return f"{self.path} is larger than {limit}, more than an export may be; export a smaller collection"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            return f"cannot read the export {self.path}: not UTF-8 ({error.reason})"
        ends = self._clock.monotonic() + self._deadline_s

        def in_time() -> None:
            if self._clock.monotonic() > ends:
                raise _TooSlow

        try:
            if self.path.suffix.lower() in (".bib", ".bibtex", ".biblatex"):
                return _contents(_entries_from_bibtex(text, in_time))
            return self._from_json(text, in_time)
        except _TooSlow:
            return (
                f"{self.path} was not parsed within {self._deadline_s:g} s; split the export, "
                "or use Better CSL JSON (much faster to read). It is parsed again when it changes"
            )

    def _from_json(self, text: str, in_time: Callable[[], None]) -> ExportContents | str:
        try:
            data = json.loads(text)
        except RecursionError:
            return f"{self.path} is not an export: its JSON is nested too deeply to read"
        except ValueError as error:  # JSONDecodeError, or a number too long to convert
            return f"{self.path} is not valid JSON: {error}"
        if isinstance(data, list):
            return _contents(_entries(data, _item_from_csl, in_time))
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            return _contents(_entries(data["items"], _item_from_bbt_json, in_time))
        return f"{self.path} is neither Better CSL JSON (a list) nor BetterBibTeX JSON (with items)"


_Entry = tuple[str, ZoteroItem | str]  # (label, the item or why it could not be read)


def _contents(entries: Iterator[_Entry]) -> ExportContents:
    """Items by citekey (a later entry of a citekey wins, as before) and malformed entries by label."""
    items: dict[str, ZoteroItem] = {}
    malformed: dict[str, str] = {}
    for label, entry in entries:
        if isinstance(entry, str):
            malformed[label] = entry
        elif entry.citekey:
            items[entry.citekey] = entry
    return ExportContents(items, malformed)


def _entries(
    data: list[Any], convert: Callable[[dict[str, Any]], ZoteroItem], in_time: Callable[[], None]
) -> Iterator[_Entry]:
    """Each JSON entry converted, or why it could not be (any exception: an entry of an
    unexpected shape, a date like 1e999), labelled by its citekey where one can be read."""
    for number, entry in enumerate(data, 1):
        in_time()
        label = f"entry {number}"
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"a {type(entry).__name__}, not an object")
            label = str(entry.get("citation-key") or citekey_of(entry) or entry.get("id") or label)
            yield label, convert(entry)
        except Exception as error:
            yield label, _reason(error)


def _reason(error: Exception) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _skipped(contents: ExportContents) -> str:
    """`` (2 malformed entries were skipped: a, b)`` where some were, so a missing citekey
    that is one of them can be recognised."""
    count = len(contents.malformed)
    if not count:
        return ""
    shown = ", ".join(list(contents.malformed)[:5]) + (", …" if count > 5 else "")
    return f" ({count} malformed {'entry was' if count == 1 else 'entries were'} skipped: {shown})"


def _item_from_bbt_json(data: dict[str, Any]) -> ZoteroItem:
    """BetterBibTeX JSON: Zotero fields; notes are HTML strings or `{"note": …}` objects."""
    return item_from_zotero(
        data,
        notes=[n["note"] if isinstance(n, dict) else n for n in data.get("notes", [])],
        attachments=[attachment_from(a) for a in data.get("attachments", [])],
    )


# CSL types back to Zotero's, for the types Zotero maps one way only; others keep their name.
_CSL_TO_ZOTERO = {
    "article": "preprint",
    "article-journal": "journalArticle",
    "article-magazine": "magazineArticle",
    "article-newspaper": "newspaperArticle",
    "paper-conference": "conferencePaper",
    "chapter": "bookSection",
    "webpage": "webpage",
    "post-weblog": "blogPost",
    "motion_picture": "film",
    "song": "audioRecording",
    "speech": "presentation",
    "dataset": "dataset",
    "software": "computerProgram",
}
_CSL_NAME_ROLES = ("author", "editor", "translator", "container-author", "collection-editor", "director")


def _item_from_csl(data: dict[str, Any]) -> ZoteroItem:
    """Better CSL JSON: CSL fields, the citekey in `citation-key` (older BBT: `id`)."""
    date = _csl_date(data.get("issued") or {})
    return ZoteroItem(
        citekey=data.get("citation-key") or str(data.get("id", "")),
        title=data.get("title", ""),
        item_type=_CSL_TO_ZOTERO.get(data.get("type", ""), data.get("type", "document")),
        creators=tuple(
            Creator(
                last=name.get("family") or name.get("literal", ""),
                first=name.get("given", ""),
                creator_type=role,
            )
            for role in _CSL_NAME_ROLES
            for name in data.get(role, [])
        ),
        date=date,
        year=year_of(date),
        abstract=data.get("abstract", ""),
        tags=_keywords(data.get("keyword", "")),
        doi=data.get("DOI", ""),
        url=data.get("URL", ""),
        publication=data.get("container-title", ""),
    )


def _keywords(text: str) -> tuple[str, ...]:
    """Tags from a comma-separated keyword field (CSL `keyword`, BibLaTeX `keywords`)."""
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


def _csl_date(issued: dict[str, Any]) -> str:
    """`{"date-parts": [[2024, 6, 4]]}` as `2024-06-04`; `raw`/`literal` dates as given. A part
    that is no whole number (`1e999`, `"June"`) is a ValueError: the entry is malformed."""
    parts = (issued.get("date-parts") or [[]])[0]
    if parts:
        numbers = [_date_part(part) for part in parts]
        return "-".join(f"{n:02d}" if i else str(n) for i, n in enumerate(numbers))
    return str(issued.get("raw") or issued.get("literal") or "")


def _date_part(value: object) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,6}", value.strip()):
        return int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 10**6 and value == int(value):
        return int(value)
    raise ValueError(f"issued date-parts holds {value!r}, which is no part of a date")


# BibTeX/BibLaTeX entry types back to Zotero's.
_BIB_TO_ZOTERO = {
    "article": "journalArticle",
    "inproceedings": "conferencePaper",
    "conference": "conferencePaper",
    "book": "book",
    "incollection": "bookSection",
    "inbook": "bookSection",
    "phdthesis": "thesis",
    "mastersthesis": "thesis",
    "thesis": "thesis",
    "techreport": "report",
    "report": "report",
    "online": "webpage",
    "misc": "document",
    "software": "computerProgram",
    "dataset": "dataset",
}


# BibTeX as bibtexparser 1.x reads it (the reader pyzotero pins), without its pyparsing grammar,
# which took 80% of a parse: about 2 s a MB, so 30 s and more for a 15 MB export.
_BIB_FIELDS = ("title", "date", "year", "abstract", "keywords", "doi", "url", "pubstate", "eprinttype")
_BIB_VENUES = ("journaltitle", "journal", "booktitle", "eprinttype")
_MONTHS = "January February March April May June July August September October November December"
_COMMON_STRINGS = {month[:3].lower(): month for month in _MONTHS.split()}  # bibtexparser's common_strings
_LINE_AT = re.compile(r"^[ \t\r\n]*@", re.MULTILINE)  # where an entry may start after anything else
_SPACE = re.compile(r"[ \t\r\n]+")
_BIB_TYPE = re.compile(r"@[ \t\r\n]*([A-Za-z]+)[ \t\r\n]*([{(]?)")
_BIB_KEY = re.compile(r"[ \t\r\n]*([^,\s]+)[ \t\r\n]*,")
_BIB_LABEL = re.compile(r"@[ \t\r\n]*[A-Za-z]*[ \t\r\n]*[{(][ \t\r\n]*([^,\s{}()]*)")
_BIB_FIELD = re.compile(r"([A-Za-z0-9_\-().+]+)[ \t\r\n]*=[ \t\r\n]*")
_BIB_WORD = re.compile(r"[A-Za-z0-9_\-:]+")  # a number or a macro (@string) name
_BRACE = re.compile(r"[{}]")
_QUOTE_OR_BRACE = re.compile(r'["{}]')


class _NotBibTeX(ValueError):
    """Why the entry at a position is not BibTeX."""


def _skip(text: str, at: int) -> int:
    """The position after the blanks at `at`."""
    blanks = _SPACE.match(text, at)
    return blanks.end() if blanks else at


def _entries_from_bibtex(text: str, in_time: Callable[[], None]) -> Iterator[_Entry]:
    """Every entry, read as bibtexparser 1.x reads it: entries start at an `@` after a line
    break (or right after the previous entry), `@comment` runs to the next such `@`, `@string`
    defines a macro (the month names are predefined), values are braced, quoted, numbers or
    macros joined by `#`, field names are lower-cased and the first of a repeated field wins.
    Where bibtexparser would file an entry it cannot read as a comment and drop it, this
    reports it by its citekey. Bounded: the deadline is kept between entries, and an entry
    longer than `MAX_BIB_ENTRY_CHARS` is malformed, so an unclosed brace costs one scan of
    that many characters."""
    strings = dict(_COMMON_STRINGS)
    text = text.removeprefix("\ufeff")
    found = _LINE_AT.search(text)
    at = found.end() - 1 if found else None
    for number in itertools.count(1):
        if at is None:
            return
        in_time()
        try:
            end, entry = _bib_block(text, at, strings)
        except _NotBibTeX as error:
            label = _BIB_LABEL.match(text, at)
            yield (label and label.group(1)) or f"entry {number}", f"not valid BibTeX: {error}"
            end, entry = at + 1, None
        if entry is not None:
            yield entry
        after = _skip(text, end)
        if entry is not None and text.startswith("@", after):
            at = after  # the next entry right after this one, as bibtexparser reads it
        else:
            found = _LINE_AT.search(text, end)
            at = found.end() - 1 if found else None


def _bib_block(text: str, at: int, strings: dict[str, str]) -> tuple[int, _Entry | None]:
    """The block at `at` (an `@`): where it ends, and the entry it is (None for `@string`,
    `@preamble` and `@comment`; an entry that fails to convert carries the reason)."""
    kind = _BIB_TYPE.match(text, at)
    if kind is not None and kind.group(1).lower() == "comment":
        return kind.end(), None  # to the next entry, braces or not
    if kind is None or not kind.group(2):
        raise _NotBibTeX("no entry type and opening brace after @")
    name, close = kind.group(1).lower(), "}" if kind.group(2) == "{" else ")"
    limit = min(len(text), at + MAX_BIB_ENTRY_CHARS)
    if name in ("string", "preamble"):
        macro = _BIB_FIELD.match(text, _skip(text, kind.end())) if name == "string" else None
        if name == "string" and macro is None:
            raise _NotBibTeX("@string without `name =`")
        value, end = _bib_value(text, macro.end() if macro else kind.end(), strings, limit)
        if macro is not None:
            strings[macro.group(1).lower()] = value
        return _closed(text, end, close), None
    key = _BIB_KEY.match(text, kind.end())
    if key is None:
        raise _NotBibTeX("no citekey followed by a comma")
    fields: dict[str, str] = {}
    end = key.end()
    while not text.startswith(close, end := _skip(text, end)):
        field = _BIB_FIELD.match(text, end)
        if field is None:
            after = list(fields)[-1] if fields else "the citekey"
            raise _NotBibTeX(f"expected a field or {close!r} after {after}")
        value, end = _bib_value(text, field.end(), strings, limit)
        fields.setdefault(field.group(1).lower(), value)  # as bibtexparser: the first of a repeated field
        end = _skip(text, end)
        if text.startswith(",", end):
            end += 1
        elif not text.startswith(close, end):
            raise _NotBibTeX(f"a missing comma after {field.group(1)}, or an unbalanced brace in it")
    fields |= {"ENTRYTYPE": name, "ID": key.group(1)}
    try:
        return end + 1, (key.group(1), _item_from_bibtex(fields))
    except Exception as error:  # a field that cannot be converted
        return end + 1, (key.group(1), _reason(error))


def _closed(text: str, end: int, close: str) -> int:
    end = _skip(text, end)
    if not text.startswith(close, end):
        raise _NotBibTeX(f"expected {close!r}")
    return end + 1


def _bib_value(text: str, at: int, strings: dict[str, str], limit: int) -> tuple[str, int]:
    """A field value at `at`: parts joined by `#`, each braced, quoted, a number or a macro."""
    parts = []
    while True:
        at = _skip(text, at)
        if at >= limit:
            raise _NotBibTeX(f"longer than {MAX_BIB_ENTRY_CHARS // 2**20} MiB, or an unclosed brace")
        if text[at] in '{"':
            part, at = _delimited(text, at, limit)
            parts.append(_strip_after_new_lines(part))
        elif word := _BIB_WORD.match(text, at):
            at = word.end()
            if word.group().isdigit():
                parts.append(word.group())
            elif (macro := strings.get(word.group().lower())) is not None:
                parts.append(macro)
            else:
                raise _NotBibTeX(f"undefined macro {word.group()!r}")
        else:
            raise _NotBibTeX("expected a value")
        at = _skip(text, at)
        if not text.startswith("#", at):
            value = "".join(parts)
            return ("" if value == "{}" else value), at
        at += 1


def _delimited(text: str, at: int, limit: int) -> tuple[str, int]:
    """A `{…}` or `"…"` value at `at`: its inside, braces in it balanced, and where it ends."""
    quoted = text[at] == '"'
    depth = 0 if quoted else 1
    for mark in (_QUOTE_OR_BRACE if quoted else _BRACE).finditer(text, at + 1, limit):
        char = mark.group()
        if char == '"':
            if depth == 0:
                return text[at + 1 : mark.start()], mark.end()
            continue
        depth += 1 if char == "{" else -1
        if depth < 0:
            break
        if depth == 0 and not quoted:
            return text[at + 1 : mark.start()], mark.end()
    raise _NotBibTeX("an unbalanced brace or an unclosed quote")


def _strip_after_new_lines(value: str) -> str:
    """bibtexparser's: lines after the first lose their leading blanks."""
    lines = value.splitlines()
    return "\n".join(lines[:1] + [line.lstrip() for line in lines[1:]])


def _item_from_bibtex(entry: dict[str, str]) -> ZoteroItem:
    """An item from an entry's fields: LaTeX becomes Unicode (bibtexparser's tables); names
    are split on top-level `and`, so `{Barnes and Noble}` stays one institution."""
    from bibtexparser.latexenc import latex_to_unicode

    # only the fields a note shows are decoded: latex_to_unicode is most of a parse's time
    field = {k: latex_to_unicode(entry[k]).strip() for k in (*_BIB_FIELDS, *_BIB_VENUES) if k in entry}
    entry_type = entry["ENTRYTYPE"].lower()
    is_preprint = "eprint" in entry or field.get("pubstate") == "prepublished"
    date = field.get("date") or field.get("year", "")
    return ZoteroItem(
        citekey=entry["ID"],
        title=field.get("title", ""),
        item_type="preprint" if is_preprint else _BIB_TO_ZOTERO.get(entry_type, entry_type),
        creators=tuple(
            _bib_creator(name, role) for role in ("author", "editor") for name in _split_names(entry.get(role, ""))
        ),
        date=date,
        year=year_of(date),
        abstract=field.get("abstract", ""),
        tags=_keywords(field.get("keywords", "")),
        doi=field.get("doi", ""),
        url=field.get("url", ""),
        publication=next((field[f] for f in _BIB_VENUES if field.get(f)), ""),
    )


def _split_names(value: str) -> list[str]:
    """`A and {B and C}` → [`A`, `{B and C}`]: split on ` and ` outside braces."""
    names, depth, start = [], 0, 0
    for i, char in enumerate(value):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0 and value[i : i + 5].lower() == " and ":
            names.append(value[start:i])
            start = i + 5
    names.append(value[start:])
    return [" ".join(n.split()) for n in names if n.strip()]


def _bib_creator(name: str, role: str) -> Creator:
    from bibtexparser.customization import splitname
    from bibtexparser.latexenc import latex_to_unicode

    parts = splitname(name, strict_mode=False)
    last = " ".join(parts["von"] + parts["last"])
    first = " ".join(parts["first"] + parts["jr"])
    return Creator(last=latex_to_unicode(last), first=latex_to_unicode(first), creator_type=role)
