"""Better BibTeX exports read offline: Better CSL JSON, BetterBibTeX JSON and BibTeX/BibLaTeX."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from actadd_notes.errors import ZoteroError
from actadd_notes.zotero.items import Creator, ZoteroItem, attachment_from, item_from_zotero, year_of

__all__ = ["BetterBibTexSource"]


class BetterBibTexSource:
    """A Better BibTeX export, read offline: Better CSL JSON (a list of CSL items with
    `citation-key`), BetterBibTeX JSON (`{"items": [...]}`, Zotero fields plus `citationKey`,
    `notes` and `attachments`) or BibTeX/BibLaTeX `.bib`.

    Items from here have no annotations: Zotero does not give annotations to export
    translators, so no BBT export format carries them (only BBT's JSON-RPC does). The file
    is re-read when it changes, so a BBT auto-export keeps the source current.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = f"bbt:{self.path.name}"
        self._loaded: tuple[tuple[int, int], dict[str, ZoteroItem]] | None = None

    def find(self, citekey: str) -> ZoteroItem:
        try:
            return self._items()[citekey]
        except KeyError:
            raise ZoteroError(f"not in {self.path}", source=self.name, item=citekey) from None

    def _items(self) -> dict[str, ZoteroItem]:
        try:
            stat = self.path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
            if self._loaded is None or self._loaded[0] != version:
                items = self._parse(self.path.read_text(encoding="utf-8"))
                self._loaded = (version, {item.citekey: item for item in items if item.citekey})
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else f"not UTF-8 ({error.reason})"
            raise ZoteroError(
                f"cannot read the export {self.path}: {reason}; point a Better BibTeX auto-export "
                "there or fix bbt_exports",
                source=self.name,
            ) from error
        return self._loaded[1]

    def _parse(self, text: str) -> list[ZoteroItem]:
        """The export's items; a ZoteroError for a file or an entry of the wrong shape (a
        hand-edited or truncated export), never an exception that would end the run."""
        try:
            return self._convert(text)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ZoteroError(
                f"{self.path} holds an entry of an unexpected shape ({type(error).__name__}: {error})",
                source=self.name,
            ) from error

    def _convert(self, text: str) -> list[ZoteroItem]:
        if self.path.suffix.lower() in (".bib", ".bibtex", ".biblatex"):
            return _items_from_bibtex(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ZoteroError(f"{self.path} is not valid JSON: {error}", source=self.name) from error
        if isinstance(data, list):
            return [_item_from_csl(entry) for entry in data]
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            return [_item_from_bbt_json(entry) for entry in data["items"]]
        raise ZoteroError(
            f"{self.path} is neither Better CSL JSON (a list) nor BetterBibTeX JSON (with items)",
            source=self.name,
        )


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
    """`{"date-parts": [[2024, 6, 4]]}` as `2024-06-04`; `raw`/`literal` dates as given."""
    parts = (issued.get("date-parts") or [[]])[0]
    if parts:
        return "-".join(f"{int(p):02d}" if i else str(p) for i, p in enumerate(parts))
    return str(issued.get("raw") or issued.get("literal") or "")


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


def _items_from_bibtex(text: str) -> list[ZoteroItem]:
    """BibTeX/BibLaTeX through bibtexparser 1.x (pyzotero pins <2): LaTeX becomes Unicode,
    names are split on top-level `and` so `{Barnes and Noble}` stays one institution."""
    from bibtexparser.bparser import BibTexParser
    from bibtexparser.latexenc import latex_to_unicode
    from pyparsing.warnings import PyparsingDiagnosticWarning

    with warnings.catch_warnings():
        # bibtexparser 1.x's grammar trips pyparsing 3's diagnostics on every parser built
        warnings.simplefilter("ignore", PyparsingDiagnosticWarning)
        parser = BibTexParser(common_strings=True, ignore_nonstandard_types=False)
    items = []
    for entry in parser.parse(text).entries:
        field = {k: latex_to_unicode(v).strip() for k, v in entry.items() if k not in ("author", "editor")}
        entry_type = field["ENTRYTYPE"].lower()
        is_preprint = "eprint" in field or field.get("pubstate") == "prepublished"
        date = field.get("date") or field.get("year", "")
        items.append(
            ZoteroItem(
                citekey=entry["ID"],
                title=field.get("title", ""),
                item_type="preprint" if is_preprint else _BIB_TO_ZOTERO.get(entry_type, entry_type),
                creators=tuple(
                    _bib_creator(name, role)
                    for role in ("author", "editor")
                    for name in _split_names(entry.get(role, ""))
                ),
                date=date,
                year=year_of(date),
                abstract=field.get("abstract", ""),
                tags=_keywords(field.get("keywords", "")),
                doi=field.get("doi", ""),
                url=field.get("url", ""),
                publication=next(
                    (field[f] for f in ("journaltitle", "journal", "booktitle", "eprinttype") if field.get(f)), ""
                ),
            )
        )
    return items


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
