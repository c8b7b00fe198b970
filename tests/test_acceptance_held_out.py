"""Acceptance at research scale: the example vault's second spec, Love − Hate on 40 prompts read from a
data file in the vault, confirmed on the 20 the search never saw, with a prompting baseline.

It reads what `actadd-notes demo` (the session's `demo_vault` fixture) wrote for that spec: the
verdict must be `detected` with the scope `held-out prompts`, the search and confirmation prompts
must be disjoint halves of the file's rows, each held-out prompt must have its own effect, the shares
must be reported, the prompting baseline must have its row, and the recorded rows and hash must be
what reading the file again gives.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from actadd_notes.experiments.prompt_sets import load_prompt_set, parse_prompt_source
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.data_files import resolve_data_file
from actadd_notes.vault.notes import Note

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(1800)]

DATA_LINK = "[[Data/hostile-openings.txt]]"


@pytest.fixture(scope="module")
def held_out(demo_vault):
    target, report = demo_vault
    (run,) = [run for run in report["runs"] if run["note"].endswith("love-hate-held-out.md")]
    assert run["status"] == "done", run
    note = Note.read(Path(run["result_note"]))
    folder = target / "Results" / "artifacts" / f"love-hate-held-out {note.properties['run_id']}"
    results = json.loads((folder / "results.json").read_text())
    return target, note, results, folder


def test_love_minus_hate_is_detected_on_prompts_the_search_never_saw(held_out):
    _, note, results, _ = held_out
    properties = note.properties
    assert properties["effect"] == "detected", results["findings"]
    assert properties["scope"] == "held-out prompts", results["findings"]
    assert (properties["prompts"], properties["confirm_prompts"], properties["confirmation_prompts"]) == (
        40,
        "held_out",
        20,
    )
    assert results["verdict"]["scope"] == "held-out prompts"
    across = results["confirmation"]["across_prompts"]
    assert across["baseline"]["ci_low"] > 0 and across["control"]["ci_low"] > 0
    assert across["baseline"]["method"] == "prompt-paired" and across["baseline"]["df"] == 19


def test_the_prompts_are_the_files_rows_split_into_disjoint_halves(held_out):
    target, _, results, _ = held_out
    prompts = results["prompts"]
    assert prompts["count"] == 40 and prompts["design"] == "held_out"
    search, confirmation = set(prompts["search"]), set(prompts["confirmation"])
    assert not search & confirmation and search | confirmation == set(range(40)) and len(confirmation) == 20
    source = prompts["source"]
    assert source["source_hash"].startswith("sha256:") and source["row_ids"] == list(range(40))
    # a re-run reads the same rows: the file, read again, gives the recorded ids, hash and texts
    again = load_prompt_set(
        parse_prompt_source(DATA_LINK), lambda link: resolve_data_file(VaultConfig.load(target), link)
    )
    assert list(again.row_ids) == source["row_ids"] and again.source_hash == source["source_hash"]
    assert list(again.texts) == results["spec"]["prompts"]


def test_each_held_out_prompt_has_its_own_effect_and_the_shares_are_reported(held_out):
    _, note, results, folder = held_out
    confirmation = results["confirmation"]
    effects = confirmation["prompt_effects"]
    assert [e["prompt_index"] for e in effects] == confirmation["prompts"]
    assert all(e["difference"]["n"] == confirmation["samples"] for e in effects)
    spread = confirmation["heterogeneity"]
    assert spread["prompts"] == 20
    assert spread["moved_as_wanted"]["successes"] + spread["moved_against"]["successes"] <= 20
    assert spread["moved_as_wanted"]["successes"] > spread["moved_against"]["successes"]
    assert "## Prompts" in note.body and "| as wanted |" in note.body and "| the other way |" in note.body
    assert "![[" in note.body and (folder / "per-prompt.png").is_file()
    with (folder / "prompts.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and sum(row["confirmed"] == "True" for row in rows) == 20
    assert all(row["difference"] for row in rows if row["confirmed"] == "True")
    assert not any(row["difference"] for row in rows if row["confirmed"] == "False")


def test_the_prompting_baseline_has_its_row_and_its_clause(held_out):
    _, note, results, _ = held_out
    confirmation = results["confirmation"]
    assert confirmation["prompting"]["label"] == "prompting"
    assert confirmation["prompting"]["metrics"]["sentiment"]["n"] == 20 * confirmation["samples"]
    assert confirmation["versus_prompting"]["method"] == "stratified"
    assert note.properties["versus_prompting"] in ("steering better", "no detectable difference", "prompting better")
    assert "| Prompting baseline | prompting |" in note.body and "| Steering − prompting |" in note.body
    assert results["spec"]["prompt_baseline"] == "Love {prompt}"
    assert "prompting baseline" in results["verdict"]["sentence"]
