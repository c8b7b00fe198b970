"""The lab journal: Obsidian's daily note settings honoured, the user's note never disturbed."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from vaults import vault

from actadd_notes.errors import TemplateError, VaultError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.journal import (
    append_journal_entry,
    daily_note_path,
    fill_daily_template,
    journal_entry,
)
from actadd_notes.vault.moment import moment_format
from actadd_notes.vault.templates import TemplateRenderer

WHEN = datetime(2024, 1, 2, 9, 5, 7, 123456)  # a Tuesday


def daily_settings(vault: Path, **settings: str) -> None:
    (vault / ".obsidian" / "daily-notes.json").write_text(json.dumps(settings))


def append(vault: Path, entry: str, when: datetime = WHEN, renderer: TemplateRenderer | None = None) -> Path:
    return append_journal_entry(VaultConfig.load(vault), renderer or TemplateRenderer(), when=when, entry=entry)


# --- moment.js formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("YYYY-MM-DD", "2024-01-02"),
        ("YY.M.D", "24.1.2"),
        ("MMM MMMM Mo", "Jan January 1st"),
        ("ddd dddd dd d do E e", "Tue Tuesday Tu 2 2nd 2 2"),
        ("Do [of] MMMM", "2nd of January"),
        ("DDD DDDD DDDo", "2 002 2nd"),
        ("Q Qo", "1 1st"),
        ("HH:mm:ss", "09:05:07"),
        ("H h hh k kk A a", "9 9 09 9 09 AM am"),
        ("S SS SSS SSSSSS SSSSSSSSS", "1 12 123 123456 123456000"),
        ("[Week] W, [locale week] w", "Week 1, locale week 1"),
        ("GGGG-[W]WW gggg-[w]ww", "2024-W01 2024-w01"),
        ("[YYYY] \\Y\\Y YYYY", "YYYY YY 2024"),
        ("YYYY [ü", "2024 [ü"),  # an unclosed bracket is a plain character
        ("Journal", "Journam1/2/2024"),  # as in moment: `a` is am/pm, `l` a long date format
        ("L", "01/02/2024"),
        ("LL", "January 2, 2024"),
        ("LLLL", "Tuesday, January 2, 2024 9:05 AM"),
        ("ll LT", "Jan 2, 2024 9:05 AM"),
        ("[L] \\LT", "L LT"),
        ("[Journal]/YYYY/MM-MMMM/YYYY-MM-DD dddd", "Journal/2024/01-January/2024-01-02 Tuesday"),
        ("YYYY-MM-DD_HHmm", "2024-01-02_0905"),
    ],
)
def test_moment_format(fmt, expected):
    assert moment_format(WHEN, fmt) == expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (datetime(2024, 12, 30), "2025-W01 2025-w01 Mon"),  # ISO and locale weeks cross into the new year
        (datetime(2021, 1, 1), "2020-W53 2021-w01 Fri"),
        (datetime(2022, 1, 1), "2021-W52 2022-w01 Sat"),
        (datetime(2022, 1, 2), "2021-W52 2022-w02 Sun"),
        (datetime(2023, 12, 31), "2023-W52 2024-w01 Sun"),
    ],
)
def test_week_years(day, expected):
    assert moment_format(day, "GGGG-[W]WW gggg-[w]ww ddd") == expected


@pytest.mark.parametrize(
    ("day", "ordinal"), [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"),
                         (21, "21st"), (22, "22nd"), (23, "23rd"), (31, "31st")],
)  # fmt: skip
def test_ordinals(day, ordinal):
    assert moment_format(datetime(2024, 1, day), "Do") == ordinal


def test_afternoon_and_midnight():
    assert moment_format(datetime(2024, 1, 2, 0, 0), "h A k") == "12 AM 24"
    assert moment_format(datetime(2024, 1, 2, 13, 0), "h a HH") == "1 pm 13"


# --- where the daily note lives ---------------------------------------------------------------


def test_default_daily_note_is_at_the_vault_root(vault):
    assert daily_note_path(VaultConfig.load(vault), WHEN) == vault / "2024-01-02.md"


def test_daily_notes_folder_and_format_are_honoured(vault):
    daily_settings(vault, folder="Journal", format="YYYY/MM-MMMM/YYYY-MM-DD dddd")
    expected = vault / "Journal" / "2024" / "01-January" / "2024-01-02 Tuesday.md"
    assert daily_note_path(VaultConfig.load(vault), WHEN) == expected
    daily_settings(vault, folder="/Journal/", format="")
    assert daily_note_path(VaultConfig.load(vault), WHEN) == vault / "Journal" / "2024-01-02.md"


def test_bad_daily_notes_settings(vault):
    (vault / ".obsidian" / "daily-notes.json").write_text("{not json")
    with pytest.raises(VaultError, match=r"daily-notes\.json"):
        daily_note_path(VaultConfig.load(vault), WHEN)
    daily_settings(vault, folder="../outside")
    with pytest.raises(VaultError, match="outside the vault"):
        daily_note_path(VaultConfig.load(vault), WHEN)
    (vault / ".obsidian" / "daily-notes.json").write_text('{"format": 3}')
    with pytest.raises(VaultError, match="format must be a string"):
        daily_note_path(VaultConfig.load(vault), WHEN)


# --- appending entries ------------------------------------------------------------------------


def test_missing_daily_note_is_created_from_the_shipped_template(vault):
    daily_settings(vault, folder="Journal", format="YYYY-MM-DD")
    path = append(vault, "- 09:05 first")
    assert path == vault / "Journal" / "2024-01-02.md"
    assert path.read_text() == "---\ndate: 2024-01-02\n---\n\n## Lab journal\n- 09:05 first\n"


def test_missing_daily_note_is_created_from_the_users_template(vault):
    (vault / "Templates").mkdir()
    (vault / "Templates" / "Daily.md").write_text(
        "# {{title}}\n{{date:dddd, MMMM Do}} · {{ time }}\n← {{yesterday}} | {{tomorrow}} →\n"
        "Next month: {{date+1M:MMMM}}\n\n## Lab journal\n\n## Tasks\n- [ ] water plants\n"
    )
    daily_settings(vault, folder="Journal", format="YYYY-MM-DD", template="Templates/Daily")
    path = append(vault, "- 09:05 first")
    assert path.read_text() == (
        "# 2024-01-02\nTuesday, January 2nd · 09:05\n← 2024-01-01 | 2024-01-03 →\n"
        "Next month: February\n\n## Lab journal\n- 09:05 first\n\n## Tasks\n- [ ] water plants\n"
    )


def test_missing_user_template_is_an_error_and_writes_nothing(vault):
    daily_settings(vault, folder="Journal", template="Templates/Gone")
    with pytest.raises(VaultError, match="daily note template"):
        append(vault, "- x")
    assert not (vault / "Journal").exists()


def test_no_note_is_written_when_rendering_fails(vault):
    overrides = vault / "Templates" / "actadd-notes"
    overrides.mkdir(parents=True)
    (overrides / "daily-note.md.j2").write_text("---\ndate: {{ date }}\n---\n{{ no_such_variable }}\n")
    daily_settings(vault, folder="Journal")
    with pytest.raises(TemplateError, match=r"daily-note\.md\.j2:4"):
        append(vault, "- x", renderer=TemplateRenderer.for_vault(VaultConfig.load(vault)))
    assert not (vault / "Journal").exists()


def test_existing_note_is_untouched_and_entries_append_in_order_before_the_next_section(vault):
    daily_settings(vault, folder="Journal")
    before = (
        "---\ntags: [daily]  # mine\n---\n# Tuesday\n\nMorning notes, with a [[link]].\n\n"
        "## Lab journal\n- 08:00 written by hand\n\n## Meetings\n- standup\n\nNo newline at the end"
    )
    path = vault / "Journal" / "2024-01-02.md"
    path.parent.mkdir()
    path.write_text(before)
    append(vault, "- 09:05 first")
    append(vault, "- 09:30 second\n")
    assert path.read_text() == before.replace(
        "- 08:00 written by hand\n", "- 08:00 written by hand\n- 09:05 first\n- 09:30 second\n"
    )


def test_heading_is_created_at_the_end_when_absent(vault):
    path = vault / "2024-01-02.md"
    path.write_text("My day.\n\n## Other\ntext")
    append(vault, "- one")
    append(vault, "- two")
    assert path.read_text() == "My day.\n\n## Other\ntext\n\n## Lab journal\n- one\n- two\n"


def test_subsections_belong_to_the_journal_section(vault):
    path = vault / "2024-01-02.md"
    path.write_text("## Lab journal\n- one\n### Details\nsome detail\n\n# Next day plans\n- plan\n")
    append(vault, "- two")
    assert path.read_text() == "## Lab journal\n- one\n### Details\nsome detail\n- two\n\n# Next day plans\n- plan\n"


def test_configured_heading_and_crlf_note(vault):
    (vault / "actadd-notes.yaml").write_text("journal_heading: Experiments log\n")
    path = vault / "2024-01-02.md"
    path.write_bytes(b"Intro\r\n## Experiments log\r\n- a\r\n")
    append(vault, "- b")
    assert path.read_bytes() == b"Intro\r\n## Experiments log\r\n- a\r\n- b\r\n"


def test_empty_entry_is_refused(vault):
    with pytest.raises(ValueError, match="empty"):
        append(vault, "  \n")


def test_journal_entry_renders_one_line():
    line = journal_entry(
        TemplateRenderer(), when=WHEN, spec_link="Experiments/x.md", result_link="Results/x.md", outcome="done"
    )
    assert line == "- 09:05 [[Experiments/x]] → [[Results/x]]: done"


def test_example_vault_journal(tmp_path):
    """The example vault's settings and override, in a copy: Journal/ appears on first use."""
    import shutil

    from actadd_notes._resources import shipped_dir

    vault = tmp_path / "example"
    shutil.copytree(shipped_dir("vault_example"), vault)
    assert not (vault / "Journal").exists()
    config = VaultConfig.load(vault)
    renderer = TemplateRenderer.for_vault(config)
    entry = journal_entry(renderer, when=WHEN, spec_link="Experiments/love-hate-sweep", outcome="ok")
    path = append_journal_entry(config, renderer, when=WHEN, entry=entry)
    assert path == vault / "Journal" / "2024-01-02.md"
    assert path.read_text().endswith("## Lab journal\n- 09:05 [[Experiments/love-hate-sweep]] — ok #actadd\n")


# --- Obsidian's template placeholders ------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{date}} {{ title }} {{TIME}}", "2024-01-02 2024-01-02 09:05"),
        ("{{date:YYYY}} {{time:HH[h]mm}}", "2024 09h05"),
        ("{{date+1d:ddd}} {{date-1w}} {{date+2y:YYYY}}", "Wed 2023-12-26 2026"),
        ("{{date-2M:MMMM D}}", "November 2"),
        ("{{yesterday}} {{tomorrow}}", "2024-01-01 2024-01-03"),
        ("{{date+30m:HH:mm}}", "09:35"),
        ("<% tp.date.now() %> {{unknown}}", "<% tp.date.now() %> {{unknown}}"),
    ],
)
def test_fill_daily_template(template, expected):
    assert fill_daily_template(template, WHEN, "YYYY-MM-DD") == expected


def test_month_arithmetic_clamps_like_moment():
    assert fill_daily_template("{{date-1M:YYYY-MM-DD}}", datetime(2024, 3, 31), "YYYY-MM-DD") == "2024-02-29"
