"""Vault settings: defaults without a file, typos caught, CLI flags win; and the example vault."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from vaults import vault

from actadd_notes._resources import shipped_dir
from actadd_notes.errors import VaultError
from actadd_notes.vault.config import CONFIG_FILE, VaultConfig, find_vault_root
from actadd_notes.vault.notes import Note


def settings(vault: Path, text: str) -> Path:
    file = vault / CONFIG_FILE
    file.write_text(text)
    return file


def test_defaults_without_a_file(vault):
    config = VaultConfig.load(vault)
    assert config == VaultConfig(vault)
    assert config.zotero_sources == ["local", "web", "bbt"]
    assert config.bbt_exports == []
    assert config.path("Results", "x.md") == vault / "Results" / "x.md"
    assert VaultConfig(vault).zotero_sources is not VaultConfig(vault).zotero_sources


def test_file_values_and_defaults(vault):
    settings(vault, "results_folder: Runs\njournal_heading: Log\nzotero_sources: [bbt, local]\n")
    config = VaultConfig.load(vault)
    assert config.results_folder == "Runs"
    assert config.journal_heading == "Log"
    assert config.experiments_folder == "Experiments"
    assert config.zotero_sources == ["bbt", "local"]


def test_empty_file_means_defaults(vault):
    settings(vault, "# nothing set yet\n")
    assert VaultConfig.load(vault) == VaultConfig(vault)


def test_unknown_key_names_file_and_key(vault):
    file = settings(vault, "results_folder: Runs\nresult_folder: Typo\n")
    with pytest.raises(
        VaultError, match=re.escape(f"{file}: unknown setting 'result_folder'; did you mean 'results_folder'?")
    ):
        VaultConfig.load(vault)
    settings(vault, "zzz: 1\n")
    with pytest.raises(VaultError, match="unknown setting 'zzz'; known: artifacts_folder, bbt_exports"):
        VaultConfig.load(vault)


def test_root_is_not_a_setting(vault):
    settings(vault, "root: /elsewhere\n")
    with pytest.raises(VaultError, match="unknown setting 'root'"):
        VaultConfig.load(vault)


def test_invalid_yaml_names_the_line(vault):
    file = settings(vault, "results_folder: Runs\njournal_heading: [unclosed\nother: 1\n")
    with pytest.raises(VaultError, match=re.escape(str(file)) + r":\d+: invalid YAML"):
        VaultConfig.load(vault)
    settings(vault, "- a list\n")
    with pytest.raises(VaultError, match="must be a mapping"):
        VaultConfig.load(vault)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("results_folder: 3\n", "results_folder: must be a non-empty string"),
        ("journal_heading: ''\n", "journal_heading: must be a non-empty string"),
        ("zotero_sources: bbt\n", "zotero_sources: must be a list of strings"),
        ("zotero_sources: [bbt, zotero]\n", "zotero_sources: unknown source 'zotero'"),
        ("bbt_exports: [1]\n", "bbt_exports: must be a list of strings"),
        ("bbt_exports: [../outside.json]\n", "bbt_exports: .*outside the vault"),
        ("results_folder: ../outside\n", "results_folder: .*outside the vault"),
        ("artifacts_folder: /tmp/abs\n", "artifacts_folder: .*absolute"),
        ("experiments_folder: .obsidian/x\n", "experiments_folder: .*config folder"),
        ("config_folder: a/b\n", "config_folder: must be a folder name"),
    ],
)
def test_bad_values_name_file_and_key(vault, text, message):
    file = settings(vault, text)
    with pytest.raises(VaultError, match=re.escape(f"{file}: ") + message):
        VaultConfig.load(vault)


def test_custom_config_folder_is_protected(vault):
    settings(vault, "config_folder: .obsidian-mobile\n")
    config = VaultConfig.load(vault)
    with pytest.raises(VaultError, match="obsidian-mobile"):
        config.path(".obsidian-mobile", "app.json")


def test_missing_vault_folder(tmp_path):
    with pytest.raises(VaultError, match="not a folder"):
        VaultConfig.load(tmp_path / "missing")


def test_find_vault_root(vault, tmp_path):
    deep = vault / "Experiments" / "sub"
    deep.mkdir(parents=True)
    (deep / "note.md").write_text("x")
    assert find_vault_root(deep) == vault
    assert find_vault_root(deep / "note.md") == vault
    assert find_vault_root(vault) == vault
    (tmp_path / "plain").mkdir()
    with pytest.raises(VaultError, match="not inside an Obsidian vault"):
        find_vault_root(tmp_path / "plain")


# --- the example vault ------------------------------------------------------------------------

EXAMPLE = shipped_dir("vault_example")


def test_example_vault_settings():
    config = VaultConfig.load(EXAMPLE)
    assert config.zotero_sources == ["bbt"]
    assert config.bbt_exports == ["zotero/library.json"]
    assert find_vault_root(EXAMPLE / "Experiments") == EXAMPLE
    daily = json.loads((EXAMPLE / ".obsidian" / "daily-notes.json").read_text())
    assert daily == {"folder": "Journal", "format": "YYYY-MM-DD"}
    json.loads((EXAMPLE / ".obsidian" / "app.json").read_text())


def test_example_settings_document_every_key():
    """Each setting in actadd-notes.yaml has a comment right above it, and all settings are there."""
    lines = (EXAMPLE / CONFIG_FILE).read_text().splitlines()
    keys = [(i, line.split(":")[0]) for i, line in enumerate(lines) if re.match(r"^\w+:", line)]
    assert {key for _, key in keys} == {f for f in VaultConfig.__dataclass_fields__ if f != "root"}
    assert all(lines[i - 1].startswith("# ") for i, _ in keys)


def test_example_experiment_note():
    note = Note.read(EXAMPLE / "Experiments" / "love-hate-sweep.md")
    assert dict(note.properties) == {
        "type": "actadd-experiment",
        "status": "queued",
        "model": "embedded",
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "layer": [2, 4, 6, 8, 10],
        "coeff": [1, 2, 4, 8],
        "prompts": ["I hate you because"],
        "samples": 20,
        "confirm_samples": 60,
        "max_new_tokens": 30,
        "seed": 0,
        "temperature": 1.0,
        "top_p": 0.3,
        "freq_penalty": 1.0,
        "metrics": ["sentiment", "fluency"],
        "objective": "sentiment",
        "max_perplexity_ratio": 1.5,
        "literature": ["[[@turnerActivationAdditionSteering2024]]"],
    }
    assert "\n## Notes\n" in note.body
    assert note.text() == note.original


def test_example_vault_has_no_journal_and_no_placeholder_files():
    assert not (EXAMPLE / "Journal").exists()
    assert not list(EXAMPLE.rglob(".gitkeep"))
    assert (EXAMPLE / "README.md").is_file()
    assert (EXAMPLE / "Templates" / "actadd-notes" / "journal-entry.md.j2").is_file()
