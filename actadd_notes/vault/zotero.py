"""Zotero items by citekey, from whichever source the user has: the Zotero 7 local API, the
web API, or a Better BibTeX export file in the vault.

Every source answers `find(citekey) -> ZoteroItem` or raises `ZoteroError` naming itself and
the citekey, so `find_item` can try them in the configured order and say why each failed.
Credentials for the web API come from the environment or the user config file, never from a
note: notes are synced and shared, keys must not be.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx2

from actadd_notes.errors import ZoteroError
from actadd_notes.vault.paths import resolve_in_vault

if TYPE_CHECKING:
    from pyzotero import Zotero

    from actadd_notes.vault.config import VaultConfig

__all__ = [
    "LOCAL_API_URL",
    "WEB_API_URL",
    "Annotation",
    "Attachment",
    "BetterBibTexSource",
    "Clock",
    "Creator",
    "LocalApiSource",
    "SkippedSource",
    "SystemClock",
    "WebApiSource",
    "WebCredentials",
    "ZoteroItem",
    "ZoteroSource",
    "citekey_of",
    "find_item",
    "sources_from_config",
    "user_config_path",
    "web_credentials",
]

LOCAL_API_URL = "http://127.0.0.1:23119/api"
WEB_API_URL = "https://api.zotero.org"
_PAGE_SIZE = 100  # the most the Zotero API returns per request
_CITEKEY_IN_EXTRA = re.compile(r"^\s*Citation Key:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)
_ENABLE_LOCAL_API = (
    "start Zotero 7 and enable “Allow other applications on this computer to communicate "
    "with Zotero” in Settings → Advanced"
)


# ---------------------------------------------------------------------------- items


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

    @property
    def authors(self) -> tuple[Creator, ...]:
        """The authors; for an edited volume with none, every creator."""
        return tuple(c for c in self.creators if c.creator_type == "author") or self.creators

    @property
    def zotero_library(self) -> str:
        """The library part of `zotero://` links: `library` for one's own, `groups/ID` else."""
        return f"groups/{self.library_id}" if self.library_type == "group" else "library"


class ZoteroSource(Protocol):
    """Somewhere items can be looked up by citekey."""

    name: str

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


# ---------------------------------------------------------------------------- rate limits


class Clock(Protocol):
    """Time for waiting out rate limits; tests pass a fake so they never sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _RateLimited(Exception):
    """Raised inside the transport; the source turns it into a ZoteroError naming the item."""


class _PoliteTransport(httpx2.BaseTransport):
    """Honours `Backoff` and `Retry-After` through an injected clock, with bounded retries.

    The headers are removed before pyzotero sees them: pyzotero would otherwise wait on the
    wall clock, for as long as the server asks, and retry 429s on its own.
    """

    def __init__(self, inner: httpx2.BaseTransport, *, clock: Clock, attempts: int, max_wait_s: float):
        self._inner = inner
        self._clock = clock
        self._attempts = attempts
        self._max_wait_s = max_wait_s
        self._not_before = 0.0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        for attempt in range(1, self._attempts + 1):
            if (wait := self._not_before - self._clock.monotonic()) > 0:
                self._clock.sleep(wait)
            response = self._inner.handle_request(request)
            delay = _pop_delay(response.headers)
            if response.status_code != 429:
                if delay:
                    self._defer(delay)
                return response
            response.close()
            self._defer(delay or 2.0**attempt)
        raise _RateLimited(f"still rate-limited after {self._attempts} attempts; try again later")

    def close(self) -> None:
        self._inner.close()

    def _defer(self, seconds: float) -> None:
        if seconds > self._max_wait_s:
            raise _RateLimited(f"Zotero asks to wait {seconds:.0f} s before the next request; try again later")
        self._not_before = self._clock.monotonic() + seconds


def _pop_delay(headers: httpx2.Headers) -> float | None:
    """Seconds from `Backoff`/`Retry-After` (Zotero sends seconds), removing both headers."""
    values = [headers.pop(name) for name in ("backoff", "retry-after") if name in headers]
    seconds = [float(v) for v in values if re.fullmatch(r"\s*\d+(\.\d+)?\s*", v)]
    return max(seconds) if seconds else None


# ---------------------------------------------------------------------------- API sources


class _ApiSource:
    """Lookup through pyzotero, shared by the local and web API."""

    name: str
    _unreachable: str
    _forbidden: str
    _not_found: str

    def __init__(
        self,
        *,
        library_id: str,
        library_type: str,
        api_key: str | None,
        local: bool,
        base_url: str,
        clock: Clock,
        attempts: int,
        max_wait_s: float,
        timeout_s: float,
    ):
        from pyzotero import Zotero  # 0.2 s; only commands that reach Zotero pay it

        transport = _PoliteTransport(httpx2.HTTPTransport(), clock=clock, attempts=attempts, max_wait_s=max_wait_s)
        client = httpx2.Client(transport=transport, follow_redirects=True, timeout=timeout_s, trust_env=not local)
        self.base_url = base_url.rstrip("/")
        self._zot: Zotero = Zotero(library_id, library_type, api_key, local=local, client=client)
        self._zot.endpoint = self.base_url

    def find(self, citekey: str) -> ZoteroItem:
        with self._errors(citekey):
            found = self._lookup(citekey)
            children = [c["data"] for c in self._paged(self._zot.children, found["key"])]
            attachments = [c for c in children if c.get("itemType") == "attachment"]
            annotations = [
                _annotation(a)
                for pdf in attachments
                if pdf.get("contentType") == "application/pdf"
                for a in sorted(
                    (c["data"] for c in self._paged(self._zot.children, pdf["key"])),
                    key=lambda data: data.get("annotationSortIndex", ""),
                )
                if a.get("itemType") == "annotation"
            ]
            library = found.get("library") or {}
            return _item_from_zotero(
                found["data"],
                parsed_date=(found.get("meta") or {}).get("parsedDate", ""),
                annotations=annotations,
                notes=[c.get("note", "") for c in children if c.get("itemType") == "note"],
                attachments=[_attachment(a) for a in attachments],
                library_type=library.get("type", "user"),
                library_id=str(library.get("id", "")),
            )

    def _lookup(self, citekey: str) -> dict[str, Any]:
        """A quick search first (`everything` covers `extra`), then a scan of all top-level
        items, for servers whose search misses the citekey; either stops at the first match."""
        searches = (
            self._paged(self._zot.top, q=citekey, qmode="everything"),
            self._paged(self._zot.top),
        )
        for results in searches:
            for found in results:
                if citekey_of(found["data"]) == citekey:
                    return found
        raise ZoteroError("no item has this citekey", source=self.name, item=citekey)

    def _paged(self, fetch: Callable[..., Any], *args: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every result of a listing, a page at a time, by `start` and `Total-Results`."""
        start = 0
        while True:
            page = fetch(*args, start=start, limit=_PAGE_SIZE, **params)
            total = int(self._zot.request.headers.get("Total-Results", 0))
            yield from page
            start += len(page)
            if not page or start >= total:
                return

    @contextmanager
    def _errors(self, citekey: str) -> Iterator[None]:
        """pyzotero and httpx errors as ZoteroError, with what the user can do about them."""
        from pyzotero import errors as pz

        try:
            yield
        except _RateLimited as error:
            raise ZoteroError(str(error), source=self.name, item=citekey) from None
        except httpx2.TransportError as error:
            raise ZoteroError(f"{self._unreachable} ({error})", source=self.name, item=citekey) from error
        except pz.UserNotAuthorisedError as error:
            raise ZoteroError(self._forbidden, source=self.name, item=citekey) from error
        except pz.ResourceNotFoundError as error:
            raise ZoteroError(self._not_found, source=self.name, item=citekey) from error
        except pz.PyZoteroError as error:
            message = " ".join(str(error).split())
            raise ZoteroError(f"Zotero API error: {message}", source=self.name, item=citekey) from error


class LocalApiSource(_ApiSource):
    """The local API of a running Zotero 7 (Settings → Advanced must allow other apps)."""

    name = "local"

    def __init__(
        self,
        *,
        base_url: str = LOCAL_API_URL,
        clock: Clock | None = None,
        attempts: int = 3,
        max_wait_s: float = 60.0,
        timeout_s: float = 10.0,
    ):
        super().__init__(
            library_id="0",
            library_type="user",
            api_key=None,
            local=True,
            base_url=base_url,
            clock=clock or SystemClock(),
            attempts=attempts,
            max_wait_s=max_wait_s,
            timeout_s=timeout_s,
        )
        self._unreachable = f"Zotero is not running or not reachable at {self.base_url}: {_ENABLE_LOCAL_API}"
        self._forbidden = f"Zotero refused the local API at {self.base_url}: {_ENABLE_LOCAL_API}"
        self._not_found = f"no local API at {self.base_url}: it needs Zotero 7 or later"


class WebApiSource(_ApiSource):
    """The zotero.org web API for a user or group library."""

    name = "web"

    def __init__(
        self,
        *,
        library_id: str,
        api_key: str | None,
        library_type: str = "user",
        base_url: str = WEB_API_URL,
        clock: Clock | None = None,
        attempts: int = 3,
        max_wait_s: float = 60.0,
        timeout_s: float = 30.0,
    ):
        super().__init__(
            library_id=library_id,
            library_type=library_type,
            api_key=api_key,
            local=False,
            base_url=base_url,
            clock=clock or SystemClock(),
            attempts=attempts,
            max_wait_s=max_wait_s,
            timeout_s=timeout_s,
        )
        library = f"{library_type} library {library_id}"
        self._unreachable = f"cannot reach the Zotero web API at {self.base_url}"
        self._forbidden = f"the Zotero web API refused access to {library}: check ZOTERO_API_KEY"
        self._not_found = f"the Zotero web API has no {library}: check ZOTERO_LIBRARY_ID and ZOTERO_LIBRARY_TYPE"


@dataclass(frozen=True)
class WebCredentials:
    """Where the web API finds a library; the key may be empty for a public library."""

    library_id: str
    api_key: str = ""
    library_type: str = "user"


def user_config_path() -> Path:
    """`$XDG_CONFIG_HOME/actadd-notes/config.toml` (default `~/.config/…`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "actadd-notes" / "config.toml"


def web_credentials() -> WebCredentials:
    """Credentials from ZOTERO_LIBRARY_ID / ZOTERO_API_KEY / ZOTERO_LIBRARY_TYPE, each falling
    back to `library_id` / `api_key` / `library_type` in the `[zotero]` table of the user
    config file. ZoteroError says what is missing."""
    path = user_config_path()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("zotero", {}) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ZoteroError(f"cannot read the Zotero web credentials in {path}: {error}") from error
    values = {
        field: os.environ.get(f"ZOTERO_{field.upper()}") or str(table.get(field, ""))
        for field in ("library_id", "api_key", "library_type")
    }
    if not values["library_id"]:
        raise ZoteroError(
            "no Zotero web library configured: set ZOTERO_LIBRARY_ID and ZOTERO_API_KEY, "
            f"or library_id and api_key under [zotero] in {path}"
        )
    values["library_type"] = values["library_type"] or "user"
    if values["library_type"] not in ("user", "group"):
        raise ZoteroError(f"Zotero library type {values['library_type']!r} is not 'user' or 'group'")
    return WebCredentials(**values)


# ---------------------------------------------------------------------------- Better BibTeX


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


# ---------------------------------------------------------------------------- configured sources


@dataclass(frozen=True)
class SkippedSource:
    """A configured source that cannot be used; kept in the list so `doctor` can show the
    reason and `find_item`'s error names it, without a network request."""

    name: str
    reason: str

    def find(self, citekey: str) -> ZoteroItem:
        raise ZoteroError(f"skipped: {self.reason}", source=self.name, item=citekey)


def sources_from_config(config: VaultConfig) -> list[ZoteroSource]:
    """The sources in `config.zotero_sources` order; `bbt` expands to one source per export.
    `web` without credentials and `bbt` without exports become SkippedSource."""
    sources: list[ZoteroSource] = []
    for name in config.zotero_sources:
        if name == "local":
            sources.append(LocalApiSource())
        elif name == "web":
            try:
                credentials = web_credentials()
            except ZoteroError as error:
                sources.append(SkippedSource("web", str(error)))
                continue
            sources.append(
                WebApiSource(
                    library_id=credentials.library_id,
                    api_key=credentials.api_key or None,
                    library_type=credentials.library_type,
                )
            )
        elif name == "bbt":
            if not config.bbt_exports:
                sources.append(SkippedSource("bbt", "no Better BibTeX export listed in bbt_exports"))
            for export in config.bbt_exports:
                path = resolve_in_vault(config.root, export, config_folder=config.config_folder)
                sources.append(BetterBibTexSource(path))
        else:
            raise ZoteroError(f"unknown source {name!r} in zotero_sources: use local, web or bbt", source=name)
    return sources


def find_item(citekey: str, sources: Sequence[ZoteroSource]) -> ZoteroItem:
    """The item from the first source that has it; else one error listing every failure."""
    failures: list[str] = []
    for source in sources:
        try:
            return source.find(citekey)
        except ZoteroError as error:
            failures.append(str(error))
    if not failures:
        raise ZoteroError("no Zotero source is configured (zotero_sources is empty)", item=citekey)
    raise ZoteroError("no Zotero source has it:\n" + "\n".join(f"  - {f}" for f in failures), item=citekey)


# ---------------------------------------------------------------------------- conversions


def _item_from_zotero(
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
        year=_year(parsed_date or date),
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


def _item_from_bbt_json(data: dict[str, Any]) -> ZoteroItem:
    """BetterBibTeX JSON: Zotero fields; notes are HTML strings or `{"note": …}` objects."""
    return _item_from_zotero(
        data,
        notes=[n["note"] if isinstance(n, dict) else n for n in data.get("notes", [])],
        attachments=[_attachment(a) for a in data.get("attachments", [])],
    )


def _attachment(data: dict[str, Any]) -> Attachment:
    return Attachment(
        key=data.get("key") or data.get("itemKey") or "",
        title=data.get("title", ""),
        content_type=data.get("contentType") or data.get("mimeType") or "",
        path=data.get("path") or data.get("localPath") or "",
    )


def _annotation(data: dict[str, Any]) -> Annotation:
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


def _year(date: str) -> str:
    match = re.search(r"\b(\d{4})\b", date)
    return match.group(1) if match else ""


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
        year=_year(date),
        abstract=data.get("abstract", ""),
        tags=tuple(t.strip() for t in data.get("keyword", "").split(",") if t.strip()),
        doi=data.get("DOI", ""),
        url=data.get("URL", ""),
        publication=data.get("container-title", ""),
    )


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
                year=_year(date),
                abstract=field.get("abstract", ""),
                tags=tuple(t.strip() for t in field.get("keywords", "").split(",") if t.strip()),
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
