"""Hostile vaults and flaky services (issue 10): one test per attack class, each on real files,
real links, a real misbehaving HTTP server or a real watcher process. Each of these failed on
the code before the fix: it followed the link, hung, crashed, or lost the user's words.

The compare-and-swap under a concurrent writer is in test_reliability_cas.py; property-based
round trips of notes in test_reliability_roundtrip.py.
"""

from __future__ import annotations

import hashlib
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from vaults import example_vault, idle_vault, wait_for
from zotero_server import serve_zotero

from actadd_notes.errors import TemplateError, VaultError, ZoteroError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.journal import append_journal_entry
from actadd_notes.vault.literature import ensure_literature_notes, render_literature_note
from actadd_notes.vault.notes import Note, UnreadableProperties, escape_markers, update_note
from actadd_notes.vault.paths import check_note_name
from actadd_notes.vault.scan import scan_specs, spec_notes
from actadd_notes.vault.templates import TemplateRenderer, md_block, md_cell, md_inline, wikilink, yaml_str
from actadd_notes.watcher.lock import JobClaims, VaultLock
from actadd_notes.zotero import LocalApiSource, ZoteroItem

pytestmark = pytest.mark.timeout(60)
TURNER = "turnerActivationAdditionSteering2024"
SPEC = "---\ntype: actadd-experiment\nstatus: {status}\nmodel: embedded\n---\nMy words.\n"
# 9 levels of 9 aliases: 9**9 (387 million) list items once expanded, in 500 bytes.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    (root / "Experiments").mkdir()
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- escapes: the tool's own folder, templates, spec notes, config folders -------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the vault that a hostile vault points at."""
    file = tmp_path / "outside" / "precious.txt"
    file.parent.mkdir()
    file.write_text("precious data, not the tool's\n")
    return file


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_never_written(vault, victim):
    state = vault / ".actadd-notes"
    state.mkdir()
    (state / "watcher.lock").symlink_to(victim)
    before = digest(victim)

    with pytest.raises(VaultError, match="never follows links"):
        VaultLock(vault).acquire()

    assert digest(victim) == before


def test_a_claim_file_that_is_a_symlink_or_hard_link_is_refused(vault, victim):
    claims = JobClaims(vault)
    claims.claim("Experiments/a.md", "probe")
    claims.close()
    jobs = vault / ".actadd-notes" / "jobs"
    key = hashlib.sha256(b"Experiments/love.md").hexdigest()
    (jobs / f"{key}.json").symlink_to(victim)
    hard = hashlib.sha256(b"Experiments/hate.md").hexdigest()
    os.link(victim, jobs / f"{hard}.json")
    before = digest(victim)

    with pytest.raises(VaultError, match="never follows links"):
        JobClaims(vault).claim("Experiments/love.md", "run-1")
    with pytest.raises(VaultError, match="hard link"):
        JobClaims(vault).claim("Experiments/hate.md", "run-1")

    assert digest(victim) == before


def test_a_state_folder_that_is_a_symlink_is_refused(vault, victim):
    (vault / ".actadd-notes").symlink_to(victim.parent, target_is_directory=True)

    with pytest.raises(VaultError, match="never follows links"):
        VaultLock(vault).acquire()
    with pytest.raises(VaultError, match="never follows links"):
        JobClaims(vault).claim("Experiments/love.md", "run-1")

    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]


def test_a_template_include_through_a_link_out_of_the_templates_folder_is_refused(tmp_path, victim):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "leak.md.j2").symlink_to(victim)
    (overrides / "journal-entry.md.j2").write_text("{% include 'leak.md.j2' %}")

    with pytest.raises(TemplateError, match="outside") as caught:
        TemplateRenderer(overrides).render("journal-entry.md.j2")
    assert "precious data" not in str(caught.value)  # the file was not read


def test_results_folder_dot_obsidian_is_refused_whatever_the_config_folder_is_called(vault):
    (vault / "actadd-notes.yaml").write_text("config_folder: .obsidian-work\nresults_folder: .obsidian\n")
    with pytest.raises(VaultError, match=r"results_folder: .*\.obsidian"):
        VaultConfig.load(vault)
    (vault / "actadd-notes.yaml").write_text("results_folder: .hidden/Results\n")
    with pytest.raises(VaultError, match="Obsidian hides"):
        VaultConfig.load(vault)


# --- what the watcher runs: hidden notes, sync copies, links, unreadable notes ----------------

COPIES = [
    ".hidden/love.md",
    "Experiments/.love.md",
    "Experiments/love (conflict 2026-12-01 120000).md",
    "Experiments/love.sync-conflict-20261201-120000-ABCDEFG.md",
    "Experiments/love (Jane's conflicted copy 2026-12-01).md",
    "Experiments/love (1).md",
    "Experiments/love 2.md",
    "Experiments/love-DESKTOP-1234.md",
]


def test_hidden_notes_and_sync_copies_are_never_run(vault):
    (vault / "Experiments" / "love.md").write_text(SPEC.format(status="draft"))
    for name in COPIES:
        (vault / name).parent.mkdir(parents=True, exist_ok=True)
        (vault / name).write_text(SPEC.format(status="queued"))
    (vault / "Experiments" / "Chapter 2.md").write_text(SPEC.format(status="queued"))  # no `Chapter.md`: a note

    found = spec_notes(VaultConfig.load(vault))

    assert [(p.relative_to(vault).as_posix(), s) for p, s in found] == [
        ("Experiments/Chapter 2.md", "queued"),
        ("Experiments/love.md", "draft"),
    ]


def test_a_spec_linked_from_outside_the_vault_is_passed_over_with_a_reason(vault, tmp_path):
    outside = tmp_path / "elsewhere.md"
    outside.write_text(SPEC.format(status="queued"))
    (vault / "Experiments" / "linked.md").symlink_to(outside)
    (vault / "Experiments" / "inside.md").write_text(SPEC.format(status="queued"))
    (vault / "Experiments" / "alias.md").symlink_to(vault / "Experiments" / "inside.md")

    scanned = {spec.path.name: spec for spec in scan_specs(VaultConfig.load(vault))}

    assert scanned["linked.md"].skipped.startswith(f"a link to {outside.resolve()}, outside the vault")
    assert scanned["inside.md"].status == scanned["alias.md"].status == "queued"


@pytest.mark.parametrize(
    "properties",
    [
        "due: 2025-04-31\n",
        "x: !!int\n",
        "x: !!float\n",
        "x: !!float ''\n",
        "x: !!bool maybe\n",
        "x: !!timestamp 2020-13-01\n",
        "x: " + "[" * 3000 + "]" * 3000 + "\n",
        BOMB,
    ],
    ids=["impossible date", "!!int", "!!float", "empty !!float", "!!bool", "bad timestamp", "deep", "alias bomb"],
)
def test_a_note_with_properties_yaml_cannot_build_is_skipped_with_a_reason(vault, properties):
    other = vault / "Daily" / "2025-04-30.md"
    other.parent.mkdir()
    other.write_text(f"---\n{properties}---\nsomeone else's note\n")
    spec = vault / "Experiments" / "odd.md"
    spec.write_text(f"---\ntype: actadd-experiment\nstatus: queued\n{properties}---\nMy words.\n")
    before = spec.read_bytes()

    with pytest.raises(UnreadableProperties):
        Note.read(spec)
    scanned = scan_specs(VaultConfig.load(vault))

    assert [(s.path.name, isinstance(s.error, UnreadableProperties)) for s in scanned] == [("odd.md", True)]
    assert spec.read_bytes() == before  # never rewritten


def test_a_note_that_cannot_be_a_spec_is_never_parsed(vault):
    """The alias bomb in an ordinary note costs the scan nothing: no `type: actadd-experiment` line."""
    for i in range(50):
        (vault / f"note {i}.md").write_text(f"---\n{BOMB}---\nbody\n")
    (vault / "Experiments" / "love.md").write_text(SPEC.format(status="queued"))

    assert [p.name for p, _ in spec_notes(VaultConfig.load(vault))] == ["love.md"]


@pytest.mark.parametrize("name", ["love [v2]", "a#b", "a^b", "a|b", "new\nline", "tab\there", "100%% sure"])
def test_a_spec_name_that_cannot_be_linked_or_journalled_is_refused_before_any_work(vault, name):
    with pytest.raises(VaultError, match=r"(?s)^Experiments/.*the note's path holds"):
        check_note_name(vault, vault / "Experiments" / f"{name}.md")
    assert check_note_name(vault, vault / "Experiments" / "love (v2).md") == "Experiments/love (v2)"


def test_a_daily_note_that_is_not_utf8_is_a_clear_error_naming_it(vault):
    config = VaultConfig.load(vault)
    daily = vault / "2026-01-02.md"
    daily.write_bytes("## Lab journal\n- caf\xe9\n".encode("latin-1"))
    before = daily.read_bytes()

    with pytest.raises(VaultError, match=r"2026-01-02\.md: not UTF-8 text"):
        append_journal_entry(
            config, TemplateRenderer(), when=datetime(2026, 1, 2, 9), entry="- line", unless_present="[[Results/x"
        )
    assert daily.read_bytes() == before


# --- denial of service: templates, Zotero ------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{{ 'x' * 10**10 }}",
        "{{ 'x'.center(10**10) }}",
        "{{ '{:9999999999}'.format(1) }}",
        "{{ '%09999999999d' | format(1) }}",
        "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    ],
    ids=["nested loops", "recursion", "doubling", "repeat", "center", "str.format", "format filter", "output"],
)
def test_a_vault_template_cannot_run_unbounded(tmp_path, source):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "journal-entry.md.j2").write_text(source)
    with pytest.raises(TemplateError, match="journal-entry"):
        TemplateRenderer(overrides).render("journal-entry.md.j2")


def test_a_zotero_server_trickling_bytes_fails_the_lookup_at_its_deadline():
    with serve_zotero(prefix="/api", trickle_s=0.05) as server:
        with pytest.raises(ZoteroError, match=r"local .*: no complete answer within 1 s"):
            LocalApiSource(base_url=server.url, deadline_s=1.0).find(TURNER)


def test_a_zotero_server_ignoring_start_is_stopped_after_one_repeated_page():
    with serve_zotero(prefix="/api", bogus_paging=True, search_misses=True) as server:
        with pytest.raises(ZoteroError, match="ignores paging"):
            LocalApiSource(base_url=server.url).find("nobodyKnowsThisKey")
    assert len(server.requests) <= 4  # a page and its repeat, per listing tried


@pytest.mark.parametrize("body", ["{not json", "[1, 2, 3]", '{"key": 1}', '[{"key": "X"}]', "null"])
def test_malformed_zotero_json_is_a_zotero_error_per_citekey(vault, body):
    config = VaultConfig.load(vault)
    with serve_zotero(prefix="/api", malformed=body) as server:
        source = LocalApiSource(base_url=server.url)
        with pytest.raises(ZoteroError, match=f"local {TURNER}: "):
            source.find(TURNER)
        outcome = ensure_literature_notes(config, TemplateRenderer(), [TURNER, "other"], [source])
    assert all(isinstance(error, ZoteroError) for error in outcome.values())


# --- values written into notes -------------------------------------------------------------------

MARKERS = "Love %% begin notes %% x %% end notes %%"


def test_regions_are_found_structurally_not_by_first_match(vault):
    path = vault / "Results" / "run.md"
    path.parent.mkdir()
    body = f"Spec: steering `{MARKERS}` − `Hate`\n\n## Notes\n%% begin notes %%\nmy line\n%% end notes %%\n"
    path.write_text("---\ntype: actadd-result\n---\n" + body)

    assert Note.read(path).region("notes") == "my line"
    update_note(path, lambda note: note.set_region("notes", note.region("notes") + "\n%% end notes %%"), vault=vault)
    note = Note.read(path)
    assert note.region("notes").startswith("my line\n") and "%% end notes %%" not in note.region("notes")
    assert note.body.startswith(f"Spec: steering `{MARKERS}`")


@pytest.mark.parametrize(
    "citekey", ["'q", "!!float", "&a", "*a", "null", "0x10", "{a}", "[a]", "yes", "a: b", "- x", "#c", "%x", "@k"]
)
def test_every_templated_scalar_reads_back_as_written(citekey):
    item = ZoteroItem(citekey=citekey, title="T")
    note = Note.parse(render_literature_note(TemplateRenderer(), item), Path("n.md"))
    assert note.properties["citekey"] == citekey


@pytest.mark.parametrize(
    "title",
    ["Two\nlines", "Setext\n---", "A\n===\nB", MARKERS, "A\r\nB\u2028C\x85D", "## Fake heading", "> [!danger] x"],
)
def test_zotero_titles_and_abstracts_cannot_break_the_note(title):
    item = ZoteroItem(citekey="k", title=title, abstract=f"{title}\n%% end notes %%\n## Notes", tags=("t",))
    text = render_literature_note(TemplateRenderer(), item, notes="mine")
    note = Note.parse(text, Path("n.md"))

    assert note.region("notes") == "mine" and note.region("experiments") == ""
    h1 = next(line for line in text.splitlines() if line.startswith("# "))
    assert h1.startswith("# ") and text.count("\n# ") == 1
    assert not any(line.strip() in ("---", "===") for line in note.body.splitlines())
    assert [line for line in note.body.splitlines() if line.startswith("## ")] == [
        "## Notes",
        "## Experiments",
        "## Annotations",
    ]


def test_the_markdown_filters_neutralise_line_breaks_rules_and_markers():
    for value in (MARKERS, "a\n---\nb", "line\u2028break", "%%comment", "## h"):
        for text in (md_inline(value), md_cell(value), wikilink("x", value)):
            assert "\n" not in text and "%%" not in text and "\u2028" not in text
    assert md_inline("## h") == "\\## h" and md_inline("---") == "\\---"
    assert md_block("a\n---\n%% end x %%") == "a\n\\---\n%\u200b% end x %\u200b%"
    assert "%%" not in escape_markers(MARKERS) and escape_markers("100%% sure") == "100%% sure"
    assert yaml_str("a\nb\x00\ufffe") == '"a\\nb\\u0000\\ufffe"'
    with pytest.raises(ValueError, match="cannot link"):
        wikilink("[[x]] %% begin notes %% [[y]]")


# --- a real watcher process: start-up on a hostile vault, stdin --------------------------------


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_watcher_starts_on_a_hostile_vault_runs_nothing_and_reads_no_stdin(idle_vault, tmp_path):
    import subprocess

    experiments = idle_vault / "Experiments"
    outside = tmp_path / "outside.md"
    outside.write_text(SPEC.format(status="queued"))
    (experiments / "linked.md").symlink_to(outside)
    for name in COPIES:
        (idle_vault / name).parent.mkdir(parents=True, exist_ok=True)
        (idle_vault / name).write_text(SPEC.format(status="queued"))
    (experiments / "love.md").write_text(SPEC.format(status="draft"))
    (experiments / "odd.md").write_text("---\ntype: actadd-experiment\nstatus: queued\ndue: 2025-04-31\n---\nMine.\n")
    (idle_vault / "bomb.md").write_text(f"---\n{BOMB}---\n")
    (idle_vault / "Daily").mkdir()
    (idle_vault / "Daily" / "x.md").write_text("---\ndue: 2025-04-31\ntag: !!int\n---\n")
    log = tmp_path / "watch.log"
    command = [sys.executable, "-c", "from actadd_notes.cli import main; main()", "watch", str(idle_vault)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--debounce-ms", "300", "--device", "cpu"],
            stdin=subprocess.PIPE,  # a terminal that would answer "y" to any prompt
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    try:
        process.stdin.write(b"y\ny\ny\n")
        process.stdin.flush()
        output = lambda: log.read_text(errors="replace")
        wait_for(lambda: "watching " in output() or process.poll() is not None, 90, "the watcher to start")
        assert "(0 job(s) queued)" in output(), output()
        assert os.readlink(f"/proc/{process.pid}/fd/0") == os.devnull
        assert "Experiments/linked.md: a link to" in output()
        assert "Experiments/odd.md: cannot read the properties (ValueError: day is out of range" in output()
        wait_for(lambda: "cannot read this note's properties" in (experiments / "odd.md").read_text(), 10, "callout")
        assert (experiments / "odd.md").read_text().startswith("---\ntype: actadd-experiment\nstatus: queued\n")
    finally:
        process.terminate()
        assert process.wait(30) == 0, output()
        process.stdin.close()
    assert "Traceback" not in output()
    assert not any("running " in line for line in output().splitlines())


def test_example_vault_scans_as_before(example_vault):
    assert [(p.name, s) for p, s in spec_notes(VaultConfig.load(example_vault))] == [
        ("love-hate-held-out.md", "queued"),
        ("love-hate-sweep.md", "queued"),
    ]
