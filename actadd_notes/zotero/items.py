"""The Zotero item model: what a literature note shows, whatever source the item came from,
and the conversion from Zotero's own field names (web and local API `data`, BetterBibTeX JSON)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "Annotation",
    "Attachment",
    "Creator",
    "ZoteroItem",
    "ZoteroSource",
    "annotation_from",
    "attachment_from",
    "citekey_of",
    "item_from_zotero",
    "year_of",
]

_CITEKEY_IN_EXTRA = re.compile(r"^\s*Citation Key:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Creator:
    """One creator; institutions have only `last`."""

    last: str
    first: str = ""
    creator_type: str = "author"

    @property
    def last_first(self) -> str:
        """`Turner, Alexander Matt`, the form literature notes show."""
        return f"{self.last}, {self.first}" if self.first else self.last


@dataclass(frozen=True)
class Annotation:
    """A PDF annotation made in Zotero's reader; `color` is a hex string like `#ffd400`."""

    key: str
    type: str
    text: str = ""
    comment: str = ""
    color: str = ""
    page_label: str = ""
    attachment_key: str = ""
    date_added: datetime | None = None
    date_modified: datetime | None = None


@dataclass(frozen=True)
class Attachment:
    """A file attached to an item; `path` is known only from Better BibTeX exports."""

    key: str
    title: str = ""
    content_type: str = ""
    path: str = ""


@dataclass(frozen=True)
class ZoteroItem:
    """The parts of a Zotero item a literature note shows, whatever source it came from."""

    citekey: str
    title: str
    item_type: str = "document"
    key: str = ""
    creators: tuple[Creator, ...] = ()
    date: str = ""
    year: str = ""
    abstract: str = ""
    tags: tuple[str, ...] = ()
    doi: str = ""
    url: str = ""
    publication: str = ""
    annotations: tuple[Annotation, ...] = ()
    notes: tuple[str, ...] = ()  # child notes, as Zotero's HTML
    attachments: tuple[Attachment, ...] = ()
    library_type: str = "user"
    library_id: str = ""

    def __post_init__(self) -> None:
        """Text fields must be text: a source that sends a number or an object for a title
        fails here, for that citekey, not later in a template while a note is written."""
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} is a {type(value).__name__}, not text")
        if not all(isinstance(tag, str) for tag in self.tags):
            raise TypeError("tags must be text")

    @property
    def authors(self) -> tuple[Creator, ...]:
        """The authors; for an edited volume with none, every creator."""
        return tuple(c for c in self.creators if c.creator_type == "author") or self.creators

    @property
    def zotero_library(self) -> str:
        """The library part of `zotero://` links: `library` for one's own, `groups/ID` else."""
        return f"groups/{self.library_id}" if self.library_type == "group" else "library"


_TEXT_FIELDS = (
    "citekey",
    "title",
    "item_type",
    "key",
    "date",
    "year",
    "abstract",
    "doi",
    "url",
    "publication",
    "library_type",
    "library_id",
)


class ZoteroSource(Protocol):
    """Somewhere items can be looked up by citekey."""

    @property
    def name(self) -> str:
        """What messages and `doctor` call the source: `local`, `web`, `bbt` or `bbt:<export file name>`."""
        ...

    def find(self, citekey: str) -> ZoteroItem:
        """The item with this citekey; ZoteroError if unknown or the source is unusable."""
        ...


def citekey_of(data: dict[str, Any]) -> str:
    """An item's citekey: Zotero's native `citationKey` field, else BBT's `Citation Key:` line
    in `extra` (where Better BibTeX keeps pinned keys on Zotero 6 and in synced libraries)."""
    if key := (data.get("citationKey") or "").strip():
        return key
    match = _CITEKEY_IN_EXTRA.search(data.get("extra") or "")
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------- conversions


def item_from_zotero(
    data: dict[str, Any],
    *,
    parsed_date: str = "",
    annotations: Sequence[Annotation] = (),
    notes: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    library_type: str = "user",
    library_id: str = "",
) -> ZoteroItem:
    """An item from Zotero's own field names (API `data`, BetterBibTeX JSON)."""
    date = data.get("date", "")
    return ZoteroItem(
        citekey=citekey_of(data),
        title=data.get("title", ""),
        item_type=data.get("itemType", "document"),
        key=data.get("key") or data.get("itemKey") or "",
        creators=tuple(
            Creator(
                last=c.get("lastName") or c.get("name", ""),
                first=c.get("firstName", ""),
                creator_type=c.get("creatorType", "author"),
            )
            for c in data.get("creators", [])
        ),
        date=date,
        year=year_of(parsed_date or date),
        abstract=data.get("abstractNote", ""),
        tags=tuple(t["tag"] if isinstance(t, dict) else t for t in data.get("tags", [])),
        doi=data.get("DOI", ""),
        url=data.get("url", ""),
        publication=next(
            (
                data[f]
                for f in ("publicationTitle", "proceedingsTitle", "bookTitle", "websiteTitle", "repository")
                if data.get(f)
            ),
            "",
        ),
        annotations=tuple(annotations),
        notes=tuple(notes),
        attachments=tuple(attachments),
        library_type=library_type,
        library_id=library_id,
    )


def attachment_from(data: dict[str, Any]) -> Attachment:
    return Attachment(
        key=data.get("key") or data.get("itemKey") or "",
        title=data.get("title", ""),
        content_type=data.get("contentType") or data.get("mimeType") or "",
        path=data.get("path") or data.get("localPath") or "",
    )


def annotation_from(data: dict[str, Any]) -> Annotation:
    return Annotation(
        key=data.get("key", ""),
        type=data.get("annotationType", ""),
        text=data.get("annotationText", ""),
        comment=data.get("annotationComment", ""),
        color=data.get("annotationColor", ""),
        page_label=data.get("annotationPageLabel", ""),
        attachment_key=data.get("parentItem", ""),
        date_added=_timestamp(data.get("dateAdded")),
        date_modified=_timestamp(data.get("dateModified")),
    )


def _timestamp(value: str | None) -> datetime | None:
    """Zotero's UTC timestamps (`2024-09-30T07:51:00Z`) as aware datetimes."""
    return datetime.fromisoformat(value) if value else None


def year_of(date: str) -> str:
    match = re.search(r"\b(\d{4})\b", date)
    return match.group(1) if match else ""
