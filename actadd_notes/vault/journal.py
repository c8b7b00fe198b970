"""The lab journal: one list line per run, appended to the day's daily note.

The daily note is the one Obsidian's Daily notes plugin would open: its folder, name
format (moment.js syntax) and template come from `.obsidian/daily-notes.json`. The entry
goes at the end of the `## Lab journal` section (created when missing) through
`update_note`, so the rest of the note, which the user may be typing in, is never touched.

When the section ends the note (the usual case), the entry is appended in place (O_APPEND), after
checking through the open file that the note still holds what the entry was placed in; a process
that keeps the daily note open to append to it (a logger, `tee -a`) loses nothing. When the entry
must go in the middle (another section follows, or blank lines end the section), the note is
replaced with the atomic swap of `update_note`: a save by rename or in place is still detected and
never lost, but a process holding the daily note open to append writes, from 20 ms after the swap
(`_QUIET_S`) until it reopens the note, into the replaced file: those lines are lost from the note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from actadd_notes.errors import VaultError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.moment import moment_add, moment_format
from actadd_notes.vault.notes import Note, UnreadableProperties, create_note_if_missing, read_plain_file, update_note
from actadd_notes.vault.templates import TemplateRenderer

__all__ = ["append_journal_entry", "daily_note_path", "fill_daily_template", "journal_entry"]

_DEFAULT_FORMAT = "YYYY-MM-DD"  # Obsidian's default daily note name


@dataclass(frozen=True)
class _DailyNotes:
    """The Daily notes plugin's settings, as Obsidian stores them (empty means default)."""

    folder: str = ""
    format: str = _DEFAULT_FORMAT
    template: str = ""


def daily_note_path(config: VaultConfig, when: datetime) -> Path:
    """Where Obsidian keeps the daily note of `when`'s day."""
    return _path(config, _settings(config), when)


def journal_entry(
    renderer: TemplateRenderer, *, when: datetime, spec_link: str, outcome: str, result_link: str | None = None
) -> str:
    """The journal line for one run, from `journal-entry.md.j2` (links: note paths or wikilinks)."""
    return renderer.render(
        "journal-entry.md.j2",
        time=when.strftime("%H:%M"),
        spec_link=spec_link,
        result_link=result_link,
        outcome=outcome,
    ).strip()


def append_journal_entry(
    config: VaultConfig,
    renderer: TemplateRenderer,
    *,
    when: datetime,
    entry: str,
    unless_present: str | None = None,
) -> Path:
    """Append `entry` (one line) under the journal heading of `when`'s daily note, creating the
    note (from the user's daily note template, else `daily-note.md.j2`) when missing; reads the
    Daily notes settings once. With `unless_present` (a run's link, say), a note that already
    holds that text gets nothing: a re-run of one run id adds no second line. Returns the note's
    path; VaultError (naming it) for a daily note that is not UTF-8 or cannot be written."""
    if not entry.strip():
        raise ValueError("empty journal entry")
    if "\n" in entry.strip() or "\r" in entry:
        raise ValueError(f"a journal entry is one line, not {entry!r}")
    settings = _settings(config)
    path = _path(config, settings, when)
    if not path.exists():
        text = _first_text(config, renderer, settings, when, path)  # rendered before anything is written
        create_note_if_missing(path, text, vault=config.root, config_folder=config.config_folder)

    def add(note: Note) -> None:
        if unless_present is None or unless_present not in note.text():
            note.append_to_section(config.journal_heading, entry)

    update_note(path, add, vault=config.root, config_folder=config.config_folder, append=True)
    return path


def _settings(config: VaultConfig) -> _DailyNotes:
    file = config.root / config.config_folder / "daily-notes.json"
    try:
        data = json.loads(read_plain_file(file).decode("utf-8"))
    except FileNotFoundError:
        return _DailyNotes()
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise VaultError(f"{file}: cannot read the Daily notes settings: {error}", path=file) from error
    if not isinstance(data, dict):
        raise VaultError(f"{file}: expected a JSON object", path=file)
    values = {key: data.get(key) for key in ("folder", "format", "template")}
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise VaultError(f"{file}: {key} must be a string, not {value!r}", path=file)
    return _DailyNotes(
        folder=(values["folder"] or "").strip().strip("/"),
        format=(values["format"] or "").strip() or _DEFAULT_FORMAT,
        template=(values["template"] or "").strip(),
    )


def _path(config: VaultConfig, settings: _DailyNotes, when: datetime) -> Path:
    return config.path(settings.folder, moment_format(when, settings.format) + ".md")


def _first_text(
    config: VaultConfig, renderer: TemplateRenderer, settings: _DailyNotes, when: datetime, path: Path
) -> str:
    if not settings.template:
        return renderer.render(
            "daily-note.md.j2", date=when.date(), title=path.stem, journal_heading=config.journal_heading
        )
    name = settings.template if settings.template.endswith(".md") else settings.template + ".md"
    template = config.path(name)
    try:
        text = read_plain_file(template).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VaultError(
            f"{template}: cannot read the daily note template set in Obsidian's Daily notes settings: {error}",
            path=template,
        ) from error
    filled = fill_daily_template(text, when, settings.format)
    try:  # the renderer checks its own templates; this one is Obsidian's, so it is checked here
        Note.parse(filled, path)
    except UnreadableProperties as error:
        raise VaultError(
            f"{template}: the daily note template set in Obsidian's Daily notes settings makes properties the "
            f"tool cannot read back, so no daily note was created: {error}",
            path=template,
        ) from None
    return filled


# --- Obsidian's daily note template placeholders ---------------------------------------------

_CALC = re.compile(r"{{\s*(date|time)\s*(([+-]\d+)([yqmwdhs]))?\s*(:.+?)?}}", re.IGNORECASE)


def fill_daily_template(text: str, when: datetime, date_format: str) -> str:
    """Fill `{{date}}`, `{{time}}`, `{{title}}`, `{{date:FORMAT}}`, `{{date+1d:FORMAT}}`,
    `{{yesterday}}` and `{{tomorrow}}` as Obsidian does when it creates a daily note."""
    name = moment_format(when, date_format)

    def calc(match: re.Match[str]) -> str:
        moment = when
        if match.group(2):
            moment = moment_add(moment, int(match.group(3)), match.group(4))
        fmt = match.group(5)
        return moment_format(moment, fmt[1:].strip() if fmt else date_format)

    for pattern, value in (
        (r"{{\s*date\s*}}", name),
        (r"{{\s*time\s*}}", moment_format(when, "HH:mm")),
        (r"{{\s*title\s*}}", name),
    ):
        text = re.sub(pattern, _literally(value), text, flags=re.IGNORECASE)
    text = _CALC.sub(calc, text)
    for pattern, days in ((r"{{\s*yesterday\s*}}", -1), (r"{{\s*tomorrow\s*}}", 1)):
        day = moment_format(when + timedelta(days=days), date_format)
        text = re.sub(pattern, _literally(day), text, flags=re.IGNORECASE)
    return text


def _literally(text: str) -> Callable[[re.Match[str]], str]:
    """A `re.sub` replacement that inserts `text` as it is (a string would expand `\\1` and `\\g<…>`)."""
    return lambda _: text
