"""The Bases view of every run (`Results/Steering runs.base`): the file against the format that
Obsidian documents (help.obsidian.md/bases/syntax, /bases/views, /bases/views/cards), its
creation through the vault layer, and its properties against a real result note written by
JobRunner on a tiny model."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from tiny import tiny_threads
from vaults import EXAMPLE_VAULT, example_vault, props, result_notes, tiny_model_dir, write_spec

from actadd_notes.errors import VaultError
from actadd_notes.jobs import DONE, JobRunner
from actadd_notes.vault.bases import RUNS_VIEW, RUNS_VIEW_TEXT, ensure_runs_view, runs_view_embed, runs_view_path
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.paths import resolve_in_vault

pytestmark = pytest.mark.timeout(120)

SHIPPED = EXAMPLE_VAULT / "Results" / RUNS_VIEW
NOW = datetime(2025, 3, 4, 10, 30, 15)

# What the documentation names. Top level and views: Bases syntax; view types: Views ("Layout");
# the cards settings: Cards view (image property, fit, aspect ratio, card size), written under
# the keys Obsidian itself writes; `sort` likewise.
TOP_LEVEL = {"filters", "formulas", "properties", "summaries", "views"}
VIEW_TYPES = {"table", "cards", "list", "map"}
VIEW_KEYS = {"type", "name", "limit", "filters", "order", "groupBy", "sort", "summaries"}
CARDS_KEYS = {"image", "imageFit", "imageAspectRatio", "cardSize"}
FILE_PROPERTIES = {
    "backlinks", "ctime", "embeds", "ext", "file", "folder", "links", "mtime", "name", "path", "properties", "size",
    "tags",
}  # fmt: skip
REFERENCE = re.compile(r"(note|file|formula)\.([A-Za-z_]\w*)")
QUALIFIED = re.compile(rf"^{REFERENCE.pattern}$")
# the result-note contract: these are YAML numbers, `date` an ISO datetime
NUMBERS = {
    "best_layer", "best_coeff", "baseline_value", "search_value", "search_difference", "confirmed_difference",
    "confirmed_ci_low", "confirmed_ci_high", "control_difference", "control_ci_low", "control_ci_high",
    "perplexity_ratio", "settings_tested", "samples",
}  # fmt: skip


def parse(text: str) -> dict[str, Any]:
    return YAML(typ="safe", pure=True).load(text)


def check_filter(node: Any, where: str, references: list[str]) -> None:
    """A filter is one statement (a string) or an object with exactly one of and / or / not,
    holding a list of statements and filter objects."""
    if isinstance(node, str):
        references += [m.group() for m in REFERENCE.finditer(node)]
        return
    assert isinstance(node, dict) and len(node) == 1, f"{where}: one of and/or/not, not {node!r}"
    [(conjunction, items)] = node.items()
    assert conjunction in {"and", "or", "not"}, f"{where}: {conjunction!r}"
    assert isinstance(items, list) and items, f"{where}.{conjunction}: a non-empty list"
    for index, item in enumerate(items):
        check_filter(item, f"{where}.{conjunction}[{index}]", references)


def check_base(base: dict[str, Any]) -> list[str]:
    """Check `base` against the documented format; return every property it names."""
    assert set(base) <= TOP_LEVEL, f"unknown top-level keys {set(base) - TOP_LEVEL}"
    named: list[str] = []  # places that take a property name, which must be qualified
    in_expressions: list[str] = []  # references inside filter and formula expressions
    if "filters" in base:
        check_filter(base["filters"], "filters", in_expressions)
    formulas = base.get("formulas", {})
    assert isinstance(formulas, dict)
    for name, expression in formulas.items():
        assert re.fullmatch(r"[A-Za-z_]\w*", name) and isinstance(expression, str) and expression.strip()
        in_expressions += [m.group() for m in REFERENCE.finditer(expression)]
    for key, settings in base.get("properties", {}).items():
        named.append(key)
        assert isinstance(settings, dict) and set(settings) == {"displayName"}, key
        assert isinstance(settings["displayName"], str) and settings["displayName"], key
    views = base["views"]
    assert isinstance(views, list) and views
    for view in views:
        kind = view["type"]
        assert kind in VIEW_TYPES and isinstance(view["name"], str) and view["name"]
        allowed = VIEW_KEYS | (CARDS_KEYS if kind == "cards" else set())
        assert set(view) <= allowed, f"view {view['name']}: unknown keys {set(view) - allowed}"
        assert isinstance(view["order"], list) and view["order"]
        named += view["order"]
        if "filters" in view:
            check_filter(view["filters"], f"views.{view['name']}.filters", in_expressions)
        if "groupBy" in view:
            assert set(view["groupBy"]) == {"property", "direction"} and view["groupBy"]["direction"] in {"ASC", "DESC"}
            named.append(view["groupBy"]["property"])
        for sort in view.get("sort", []):
            assert set(sort) == {"property", "direction"} and sort["direction"] in {"ASC", "DESC"}
            named.append(sort["property"])
        if kind == "cards":
            named.append(view["image"])
            assert view["imageFit"] in {"cover", "contain"} and view["imageAspectRatio"] > 0
    unqualified = [name for name in named if not QUALIFIED.match(name)]
    assert not unqualified, f"property names must be note.X, file.X or formula.X: {unqualified}"
    for reference in named + in_expressions:
        kind, name = reference.split(".", 1)
        if kind == "file":
            assert name in FILE_PROPERTIES, f"{reference} is no documented file property"
        if kind == "formula":
            assert name in formulas, f"{reference} is not defined under formulas"
    return named + in_expressions


def note_properties(base: dict[str, Any]) -> set[str]:
    return {ref.split(".", 1)[1] for ref in check_base(base) if ref.startswith("note.")}


# ----------------------------------------------------------------------------- the file
def test_the_view_is_a_base_file_in_the_documented_format():
    base = parse(RUNS_VIEW_TEXT)
    check_base(base)
    assert base["filters"] == {"and": ['note.type == "actadd-result"']}
    table, cards = base["views"]
    assert (table["type"], table["name"], cards["type"], cards["name"]) == (
        "table",
        "Runs by spec",
        "cards",
        "Heatmaps",
    )
    assert table["groupBy"] == {"property": "note.spec", "direction": "ASC"}
    assert table["order"] == [
        "file.name", "note.spec", "note.model", "note.method", "note.best_layer", "note.best_coeff", "note.effect",
        "note.scope", "note.prompts", "note.confirmed_difference", "note.confirmed_ci_low", "note.confirmed_ci_high",
        "formula.shrinkage", "note.perplexity_ratio", "note.versus_prompting", "note.date",
    ]  # fmt: skip
    assert table["sort"] == cards["sort"] == [{"property": "note.date", "direction": "DESC"}]
    assert cards["image"] == "note.heatmap"
    every_column = set(table["order"]) | set(cards["order"]) | {cards["image"]}
    assert set(base["properties"]) == every_column  # every column has a display name


def test_the_example_vault_ships_the_same_file():
    assert SHIPPED.read_text(encoding="utf-8") == RUNS_VIEW_TEXT


def test_obsidian_types_the_numbers_and_the_date_in_the_example_vault():
    types = json.loads((EXAMPLE_VAULT / ".obsidian" / "types.json").read_text(encoding="utf-8"))["types"]
    assert {name: types[name] for name in NUMBERS} == dict.fromkeys(NUMBERS, "number")
    assert (types["date"], types["literature"], types["tags"]) == ("datetime", "multitext", "tags")


# ------------------------------------------------------------------------ in the vault
@pytest.fixture
def fresh_vault(tmp_path) -> Path:
    vault = tmp_path / "vault"
    (vault / ".obsidian").mkdir(parents=True)
    return vault


def test_the_first_call_creates_the_view_and_later_ones_leave_it_alone(fresh_vault):
    config = VaultConfig.load(fresh_vault)
    path = ensure_runs_view(config)
    assert path == fresh_vault / "Results" / "Steering runs.base" == runs_view_path(config)
    assert path.read_text(encoding="utf-8") == RUNS_VIEW_TEXT
    edited = RUNS_VIEW_TEXT.replace("name: Heatmaps", "name: My heatmaps") + "# mine\n"
    path.write_text(edited, encoding="utf-8")

    assert ensure_runs_view(config) == path
    assert path.read_text(encoding="utf-8") == edited
    assert sorted(p.name for p in path.parent.iterdir()) == [RUNS_VIEW]  # no temp file left


def test_the_demo_copy_of_the_example_vault_keeps_its_shipped_view(example_vault):
    shipped = example_vault / "Results" / RUNS_VIEW
    before = shipped.stat().st_mtime_ns
    assert ensure_runs_view(VaultConfig.load(example_vault)) == shipped
    assert shipped.stat().st_mtime_ns == before and shipped.read_text(encoding="utf-8") == RUNS_VIEW_TEXT


def test_the_view_follows_the_results_folder_and_embeds_by_its_path(fresh_vault):
    assert runs_view_embed(VaultConfig.load(fresh_vault)) == "![[Results/Steering runs.base]]"
    (fresh_vault / "actadd-notes.yaml").write_text("results_folder: Lab/Runs\n")
    config = VaultConfig.load(fresh_vault)
    assert ensure_runs_view(config) == fresh_vault / "Lab" / "Runs" / RUNS_VIEW
    assert runs_view_embed(config) == "![[Lab/Runs/Steering runs.base]]"
    assert not (fresh_vault / "Results").exists()


def test_a_results_folder_swapped_for_a_link_out_of_the_vault_gets_no_view(fresh_vault, tmp_path):
    config = VaultConfig.load(fresh_vault)  # checked here, while Results/ is still a folder
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, fresh_vault / "Results")
    with pytest.raises(VaultError, match="leads outside the vault"):
        ensure_runs_view(config)
    assert list(outside.iterdir()) == []


def test_a_link_planted_at_the_view_path_is_not_followed_out(fresh_vault, tmp_path):
    target = tmp_path / "outside.base"
    (fresh_vault / "Results").mkdir()
    os.symlink(target, fresh_vault / "Results" / RUNS_VIEW)
    with pytest.raises(VaultError, match="leads outside the vault"):
        ensure_runs_view(VaultConfig.load(fresh_vault))
    assert not target.exists()


# --------------------------------------------------------------- against a real result note
def test_every_property_the_view_names_is_in_a_real_result_note(example_vault, tiny_model_dir):
    config = VaultConfig.load(example_vault)
    spec = write_spec(example_vault, "love", tiny_model_dir)
    outcome = JobRunner(config, clock=lambda: NOW).run(spec)
    assert outcome.status == DONE, outcome.error
    [note] = result_notes(example_vault)
    properties = props(note)

    base = parse(ensure_runs_view(config).read_text(encoding="utf-8"))
    wanted = note_properties(base)
    assert wanted == {
        "type", "spec", "model", "method", "best_layer", "best_coeff", "effect", "confirmed_difference",
        "confirmed_ci_low", "confirmed_ci_high", "search_difference", "perplexity_ratio", "date", "heatmap",
        "scope", "prompts", "versus_prompting",
    }  # fmt: skip
    assert sorted(wanted - set(properties)) == []
    assert properties["type"] == "actadd-result"  # the view's filter matches it
    for name in sorted(wanted & NUMBERS):
        value = properties[name]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}: {value!r} is no YAML number"
    assert isinstance(properties["date"], datetime)
    heatmap = re.fullmatch(r"\[\[([^\]|#]+\.png)\]\]", properties["heatmap"])
    assert heatmap, properties["heatmap"]
    assert resolve_in_vault(example_vault, heatmap.group(1)).is_file()
