"""Literature-driven experiments: `actadd-notes new NAME --cite CITEKEY`.

The spec cites the paper (`literature: ["[[@citekey]]"]`) and carries the literature note's
open questions, the bullets of its `%% begin notes %%` block that end in "?", as a checklist
the user edits; the literature note lists the spec as planned in its Experiments region, where
the runs that cite the paper are listed too. A missing literature note is imported from Zotero
first, and a citekey no source knows stops everything before the spec is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from actadd_notes.errors import ActaddError, VaultError, ZoteroError
from actadd_notes.vault.literature import (
    citekeys_from_links,
    ensure_literature_notes,
    link_experiment,
    literature_link,
    literature_note_path,
)
from actadd_notes.vault.notes import Note, create_note
from actadd_notes.vault.paths import safe_filename
from actadd_notes.vault.templates import TemplateRenderer, wikilink

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig
    from actadd_notes.zotero import ZoteroSource

__all__ = ["SPEC_TEMPLATE", "CitedPaper", "PlannedSpec", "experiment_line", "open_questions", "scaffold_spec"]

SPEC_TEMPLATE = "experiment-spec.md.j2"
PLANNED = "planned"
# a list item (`-`, `*`, `+` or `1.`), maybe a task (`- [ ]`), at any depth
_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[.\][ \t]+)?(?P<text>\S.*?)[ \t]*")


@dataclass(frozen=True)
class CitedPaper:
    citekey: str
    link: str  # [[@citekey]]
    note: Path  # its literature note
    questions: tuple[str, ...]
    imported: bool  # the note was imported from Zotero by this call


@dataclass(frozen=True)
class PlannedSpec:
    path: Path
    papers: tuple[CitedPaper, ...] = ()
    warnings: tuple[str, ...] = ()


def open_questions(note: Note) -> list[str]:
    """The list items of the note's `notes` region whose text ends in "?", at any depth, in order."""
    region = note.region("notes") or ""
    questions = []
    for line in region.splitlines():
        item = _ITEM.fullmatch(line)
        if item and item.group("text").endswith("?"):
            questions.append(item.group("text"))
    return questions


def experiment_line(config: VaultConfig, spec: Path, state: str = PLANNED) -> tuple[str, str]:
    """(key, line) for `link_experiment`: `- [[Experiments/NAME]] — planned`. The key is the
    bracketed link, so `Experiments/love` never matches the line of `Experiments/love-hate`."""
    relative = spec.relative_to(config.root).as_posix()
    try:
        link = wikilink(relative)
    except ValueError as error:
        raise VaultError(f"{relative}: {error}", path=spec) from None
    return link, f"- {link} — {state}"


def scaffold_spec(
    config: VaultConfig,
    name: str,
    *,
    model: str = "embedded",
    cite: Iterable[str] = (),
    now: datetime | None = None,
    renderer: TemplateRenderer | None = None,
    sources: Sequence[ZoteroSource] | None = None,
) -> PlannedSpec:
    """Create the spec note NAME (`name 1.md`… when taken) citing the papers in `cite`
    (citekeys, `@key` or `[[@key]]`). Literature notes missing from the vault are imported from
    `sources` (default: the vault's configured Zotero sources) before anything else is written;
    a failure there raises ZoteroError or VaultError and no spec is created. Once the spec
    exists, a literature note that cannot be updated is a warning in the result, not an error."""
    renderer = renderer or TemplateRenderer.for_vault(config)
    created = (now or datetime.now()).replace(microsecond=0)
    papers = _cited_papers(config, renderer, citekeys_from_links(list(cite)), sources)
    text = renderer.render(
        SPEC_TEMPLATE,
        name=name,
        model=model,
        created=created.isoformat(),
        papers=[{"link": p.link, "questions": list(p.questions)} for p in papers],
    )
    target = config.path(config.experiments_folder, safe_filename(name) + ".md")
    experiment_line(config, target)  # a folder name no link can hold fails here, before any write
    path = create_note(target, _citing(text, target, papers), vault=config.root, config_folder=config.config_folder)
    warnings = []
    for paper in papers:
        key, line = experiment_line(config, path)
        try:
            link_experiment(config, paper.citekey, run_link=key, line=line)
        except ActaddError as error:
            warnings.append(f"{paper.link}: the spec was not listed in its literature note: {error}")
    return PlannedSpec(path, tuple(papers), tuple(warnings))


def _cited_papers(
    config: VaultConfig,
    renderer: TemplateRenderer,
    citekeys: list[str],
    sources: Sequence[ZoteroSource] | None,
) -> list[CitedPaper]:
    notes = {key: literature_note_path(config, key) for key in citekeys}
    missing = [key for key, path in notes.items() if not path.is_file()]
    if missing:
        if sources is None:
            from actadd_notes.zotero import sources_from_config

            sources = sources_from_config(config)
        for key, outcome in ensure_literature_notes(config, renderer, missing, sources).items():
            if isinstance(outcome, Exception):
                where = notes[key].relative_to(config.root).as_posix()
                message = f"{literature_link(key)}: no literature note {where}, and it could not be imported: {outcome}"
                if isinstance(outcome, ZoteroError):
                    raise ZoteroError(message) from outcome
                raise VaultError(message, path=notes[key]) from outcome
    return [
        CitedPaper(key, literature_link(key), path, tuple(open_questions(Note.read(path))), key in missing)
        for key, path in notes.items()
    ]


def _citing(text: str, path: Path, papers: Sequence[CitedPaper]) -> str:
    """`text` with every paper in its `literature` property, whatever a vault's own copy of the
    template writes there; unchanged when it cites them all."""
    if not papers:
        return text
    note = Note.parse(text, path)
    current = note.properties.get("literature")
    links = [str(item) for item in current] if isinstance(current, list) else [str(current)] if current else []
    cited = set(citekeys_from_links(links))
    absent = [p.link for p in papers if p.citekey not in cited]
    if not absent:
        return text
    note.set("literature", [*links, *absent])
    return note.text()
