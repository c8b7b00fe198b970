"""Literature notes: one per paper at `{literature_folder}/@{citekey}.md`, linked `[[@citekey]]`,
rendered from a Zotero item by `literature-note.md.j2` in the layout of Zotero Integration's
common template, plus a tool-owned `experiments` region listing the runs that cite the paper.

A refresh (`write_literature_note(..., refresh=True)`) re-renders the note from Zotero and keeps:

- the `notes` persist block and the `experiments` region, byte for byte;
- frontmatter keys the template does not write, byte for byte (comments included), and the
  note's `tags` in its order and style, with Zotero tags it lacks appended (a tag removed in
  Zotero stays until removed by hand); the template's other keys are overwritten;
- each `## ` section whose heading the template does not write, verbatim, after the section
  it followed (a section after the last one goes before the `%% Import Date %%` line).

Anything else would be lost, as Zotero Integration loses it: text typed outside the regions
inside the template's own sections (the title, the info callout, `## Annotations`, after the
`%% Import Date %%` line), or a new value of a key the template writes. So a refresh that would
drop any line of the note refuses (`RefreshWouldDropText`, listing the lines) unless it is
forced; a line Zotero no longer has (an old title, say) counts too, since the tool cannot tell
it from one the user typed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from actadd_notes.errors import ActaddError, VaultError
from actadd_notes.vault.notes import Note, create_note_if_missing, update_note
from actadd_notes.vault.paths import safe_filename

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig
    from actadd_notes.vault.templates import TemplateRenderer
    from actadd_notes.zotero import Annotation, ZoteroItem, ZoteroSource

__all__ = [
    "TEMPLATE",
    "AnnotationView",
    "RefreshWouldDropText",
    "citekeys_from_links",
    "ensure_literature_notes",
    "link_experiment",
    "literature_link",
    "literature_note_path",
    "obsidian_tag",
    "refresh_literature_notes",
    "render_literature_note",
    "write_literature_note",
]

TEMPLATE = "literature-note.md.j2"
_REGIONS = (("notes", "Notes"), ("experiments", "Experiments"))  # region, heading if re-added
_LABELS = {"highlight": "Quote", "underline": "Quote", "note": "Note", "text": "Note", "image": "Image", "ink": "Ink"}
_IMPORT_DATE = re.compile(r"^%% Import Date: .* %%[ \t]*(?:\n|\Z)", re.MULTILINE)
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_SECTION = re.compile(r" {0,3}## +(.*?)(?: +#+)? *")
_TOOL_REGION = re.compile(r"%%[ \t]*begin[ \t]+(notes|experiments)[ \t]*%%.*?%%[ \t]*end[ \t]+\1[ \t]*%%\n?", re.DOTALL)


def literature_note_path(config: VaultConfig, citekey: str) -> Path:
    """`{literature_folder}/@{citekey}.md`; VaultError for a citekey no note can be named after
    (one that `safe_filename` would change, since `[[@citekey]]` must find the note)."""
    name = f"@{citekey}"
    if not citekey or safe_filename(name) != name:
        raise VaultError(f"citekey {citekey!r} cannot name a note: it holds characters Obsidian links break on")
    return config.path(config.literature_folder, f"{name}.md")


def literature_link(citekey: str) -> str:
    return f"[[@{citekey}]]"


def citekeys_from_links(values: str | Iterable[str | None] | None) -> list[str]:
    """Citekeys from what a spec's `literature` property may hold: `[[@key]]`, `[[@key|alias]]`,
    `[[Literature/@key#Notes]]`, `@key` or `key`, one or a list; duplicates once, in order."""
    if values is None or isinstance(values, str):
        values = [values]
    keys: list[str] = []
    for value in values:
        text = (value or "").strip()
        if text.startswith("[[") and text.endswith("]]"):
            text = re.split(r"[|#^]", text[2:-2], maxsplit=1)[0].rsplit("/", 1)[-1].removesuffix(".md")
        key = text.strip().removeprefix("@")
        if key and key not in keys:
            keys.append(key)
    return keys


def obsidian_tag(tag: str) -> str:
    """A Zotero tag as an Obsidian tag: `Computer Science - Machine Learning` →
    `Computer_Science/Machine_Learning`; "" when nothing taggable is left (e.g. `2024`)."""
    text = "_".join(tag.strip().lstrip("#").replace(" - ", "/").split())
    text = re.sub(r"/+", "/", re.sub(r"[^\w/-]", "", text)).strip("/")
    return "" if text.replace("/", "").isdigit() else text


@dataclass(frozen=True)
class AnnotationView:
    """An annotation as the template shows it: `date` is local time, `link` opens the PDF page."""

    label: str
    color: str
    text: str
    comment: str
    page: str
    link: str
    date: datetime | None


def render_literature_note(
    renderer: TemplateRenderer,
    item: ZoteroItem,
    *,
    now: datetime | None = None,
    notes: str = "",
    experiments: str = "",
) -> str:
    """The note's text for `item`. Times show in `now`'s time zone (default: the local one)."""
    zone = now.tzinfo if now is not None else None
    return renderer.render(
        TEMPLATE,
        item=item,
        tags=[t for t in dict.fromkeys(obsidian_tag(t) for t in item.tags) if t],
        annotations=[_annotation_view(item, a, zone) for a in item.annotations],
        notes=notes,
        experiments=experiments,
        imported=(now or datetime.now()).astimezone(zone),
    )


def _annotation_view(item: ZoteroItem, annotation: Annotation, zone: tzinfo | None) -> AnnotationView:
    """The date shown is when the annotation was made (else last changed), in `zone`."""
    made = annotation.date_added or annotation.date_modified
    page = annotation.page_label
    return AnnotationView(
        label=_LABELS.get(annotation.type, annotation.type.capitalize()),
        color=annotation.color,
        text=annotation.text,
        comment=annotation.comment,
        page=page,
        link=f"zotero://open-pdf/{quote(item.zotero_library)}/items/{quote(annotation.attachment_key)}?page={quote(page)}",
        date=made.astimezone(zone) if made else None,
    )


def write_literature_note(
    config: VaultConfig,
    renderer: TemplateRenderer,
    item: ZoteroItem,
    *,
    refresh: bool = False,
    force: bool = False,
    now: datetime | None = None,
) -> Path:
    """Create the item's note if missing; with `refresh`, re-render an existing one keeping
    what the module docstring lists. The refresh is a compare-and-swap (`update_note`): an
    edit saved meanwhile is re-read and kept, never overwritten. A refresh that would drop a
    line raises RefreshWouldDropText and writes nothing, unless `force`."""
    path = literature_note_path(config, item.citekey)
    vault, folder = config.root, config.config_folder
    if not path.is_file() and create_note_if_missing(
        path, render_literature_note(renderer, item, now=now), vault=vault, config_folder=folder
    ):
        return path
    if not refresh:
        return path

    def refreshed(note: Note) -> None:
        kept = {name: note.region(name) for name, _ in _REGIONS}
        fresh = Note.parse(
            render_literature_note(
                renderer, item, now=now, notes=kept["notes"] or "", experiments=kept["experiments"] or ""
            ),
            path,
        )
        for name, heading in _REGIONS:  # a user template may have left a region out
            region = kept[name]
            if region is not None and fresh.region(name) != region:
                fresh.set_region(name, region, heading=heading)
        dropped = [
            f"{key}: {note.properties[key]}"
            for key, value in fresh.properties.items()
            if key != "tags" and key in note.properties and str(note.properties[key]) != str(value)
        ]
        body = _merged_body(note.body, fresh.body)
        dropped += _dropped_lines(note.body, body)
        if dropped and not force:
            raise RefreshWouldDropText(path, dropped)
        for key, value in fresh.properties.items():
            note.set(key, _merged_tags(note.properties.get(key), value) if key == "tags" else value)
        note.body = body

    update_note(path, refreshed, vault=vault, config_folder=folder)
    return path


class RefreshWouldDropText(VaultError):
    """A refresh would drop lines of the note (`lines`): text typed outside the persist blocks,
    or data Zotero no longer has. Nothing was written."""

    def __init__(self, path: Path, lines: list[str]):
        self.lines = lines
        shown = "; ".join(repr(line[:80]) for line in lines[:5]) + (
            f"; and {len(lines) - 5} more" if len(lines) > 5 else ""
        )
        super().__init__(
            f"{path}: refreshing would drop {len(lines)} line(s) that are not in Zotero's current data: {shown}. "
            "Text of your own belongs in the Notes block (or a section of your own); move it there and refresh "
            "again, or refresh with --force to drop these lines",
            path=path,
        )


def link_experiment(config: VaultConfig, citekey: str, *, run_link: str, line: str) -> Path:
    """Put `line` in the note's `experiments` region as the line of the run `run_link` (the
    run's wikilink, which `line` must contain): it replaces the line that holds `run_link`,
    or is appended, so linking a run twice leaves one line. VaultError if the note is missing."""
    if run_link not in line or "\n" in line:
        raise ValueError(f"the line for {run_link} must be one line containing it, not {line!r}")
    path = literature_note_path(config, citekey)
    if not path.is_file():
        raise VaultError(f"{path}: no literature note for {literature_link(citekey)}; create it first", path=path)

    def linked(note: Note) -> None:
        lines = [old for old in (note.region("experiments") or "").splitlines() if old.strip()]
        mine = [i for i, old in enumerate(lines) if run_link in old]
        if mine:
            lines[mine[0]] = line
            lines = [old for i, old in enumerate(lines) if i not in mine[1:]]
        else:
            lines.append(line)
        note.set_region("experiments", "\n".join(lines), heading="Experiments")

    update_note(path, linked, vault=config.root, config_folder=config.config_folder)
    return path


def ensure_literature_notes(
    config: VaultConfig,
    renderer: TemplateRenderer,
    citekeys: Iterable[str],
    sources: Sequence[ZoteroSource],
) -> dict[str, Path | ActaddError]:
    """A note for every citekey: existing notes are left alone, missing ones are looked up and
    created. A citekey that fails (unknown to Zotero, a source that misbehaves, unusable as a
    name, a template that fails) gets its error in the result instead of a path, and the others
    go on: no ActaddError escapes."""
    results: dict[str, Path | ActaddError] = {}
    for citekey in dict.fromkeys(citekeys):
        try:
            path = literature_note_path(config, citekey)
            results[citekey] = (
                path if path.is_file() else write_literature_note(config, renderer, _find(citekey, sources))
            )
        except ActaddError as error:
            results[citekey] = error
    return results


def refresh_literature_notes(
    config: VaultConfig,
    renderer: TemplateRenderer,
    citekeys: Iterable[str],
    sources: Sequence[ZoteroSource],
    *,
    force: bool = False,
) -> dict[str, Path | ActaddError]:
    """Re-import every citekey's note from Zotero (creating missing ones), as `ensure_literature_notes`
    reports: a path, or the error (a RefreshWouldDropText among them, unless `force`)."""
    results: dict[str, Path | ActaddError] = {}
    for citekey in dict.fromkeys(citekeys):
        try:
            item = _find(citekey, sources)
            results[citekey] = write_literature_note(config, renderer, item, refresh=True, force=force)
        except ActaddError as error:
            results[citekey] = error
    return results


def _merged_tags(current: object, fresh: object) -> list[object]:
    """The note's tags in its order, then fresh ones it lacks."""
    mine = list(current) if isinstance(current, list) else [] if current in (None, "") else [current]
    return mine + [tag for tag in (fresh if isinstance(fresh, list) else []) if tag not in mine]


def _dropped_lines(current: str, merged: str) -> list[str]:
    """The non-blank lines of `current` that `merged` lacks (counted, so a repeated line too), the
    import date aside: it is the tool's, and changes on every refresh."""

    def lines(text: str) -> Counter[str]:
        return Counter(
            line.rstrip() for line in text.splitlines() if line.strip() and not _IMPORT_DATE.match(line + "\n")
        )

    missing = lines(current) - lines(merged)
    return [line for line in dict.fromkeys(current.splitlines()) if missing.get(line.rstrip())]


def _merged_body(current: str, fresh: str) -> str:
    """`fresh`, with the `## ` sections only `current` has put back after the section they
    followed, and the import-date line last."""
    trailer = _IMPORT_DATE.search(fresh)
    head, tail = (fresh[: trailer.start()], fresh[trailer.start() :]) if trailer else (fresh, "")
    sections = _sections(head)
    ours = {title for title, _ in sections}
    theirs: dict[str | None, list[str]] = {}
    anchor: str | None = None
    for title, text in _sections(current):
        if title in ours:
            anchor = title
        else:  # the tool's own lines have fresh copies: drop stale ones
            kept = _TOOL_REGION.sub("", _IMPORT_DATE.sub("", text))
            theirs.setdefault(anchor, []).append(kept if kept.endswith("\n") else kept + "\n")
    out = []
    for title, text in sections:
        out.append(text)
        out += theirs.pop(title, [])
    for orphans in theirs.values():
        out += orphans
    return "".join(out) + tail


def _sections(body: str) -> list[tuple[str | None, str]]:
    """`body` cut before each `## ` heading outside code fences and regions; (title, text),
    the text before the first heading titled None. Titles compare without case."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    fence, region = "", False
    for line in body.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        opener = _FENCE.match(stripped)
        if fence:
            fence = "" if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence) else fence
        elif opener:
            fence = opener.group(1)
        elif re.match(r"%%[ \t]*begin[ \t]", stripped):
            region = not re.search(r"%%[ \t]*end[ \t]", stripped[2:])  # a one-line region closes itself
        elif re.match(r"%%[ \t]*end[ \t]", stripped):
            region = False
        elif not region and (heading := _SECTION.fullmatch(stripped)):
            sections.append((heading.group(1).strip().casefold(), []))
        sections[-1][1].append(line)
    return [(title, "".join(lines)) for title, lines in sections if title is not None or lines]


def _find(citekey: str, sources: Sequence[ZoteroSource]) -> ZoteroItem:
    """Look `citekey` up; the Zotero client (an HTTP stack) loads only when a note needs it."""
    from actadd_notes.zotero import find_item

    return find_item(citekey, sources)
