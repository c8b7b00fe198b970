"""Paths the tool writes to stay inside the vault and out of `.obsidian/`."""

from __future__ import annotations

import os
import re

import pytest

from actadd_notes.errors import VaultError
from actadd_notes.vault.paths import ensure_in_vault, resolve_in_vault, safe_filename


@pytest.fixture
def vault(tmp_path):
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    (root / "Notes").mkdir()
    return root


def test_relative_path_resolves_inside(vault):
    assert resolve_in_vault(vault, "Notes/a.md") == vault / "Notes" / "a.md"
    assert resolve_in_vault(vault, "new/folder/b.md") == vault / "new" / "folder" / "b.md"
    assert resolve_in_vault(vault, "Notes/../c.md") == vault / "c.md"


@pytest.mark.parametrize("relative", ["../x.md", "Notes/../../x.md", "..", "a/b/../../../x.md"])
def test_dotdot_escape_is_refused(vault, relative):
    with pytest.raises(VaultError, match="outside the vault"):
        resolve_in_vault(vault, relative)


def test_absolute_path_is_refused(vault):
    with pytest.raises(VaultError, match="absolute"):
        resolve_in_vault(vault, vault / "Notes" / "a.md")
    with pytest.raises(VaultError, match="absolute"):
        resolve_in_vault(vault, "/etc/passwd")


def test_symlinks_leading_out_are_refused(vault, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("x")
    (vault / "link-dir").symlink_to(outside, target_is_directory=True)
    (vault / "link-file.md").symlink_to(outside / "secret.md")
    (vault / "dangling.md").symlink_to(outside / "missing.md")
    for relative in ("link-dir/secret.md", "link-dir/new.md", "link-file.md", "dangling.md"):
        with pytest.raises(VaultError, match="outside the vault"):
            resolve_in_vault(vault, relative)


def test_symlink_inside_the_vault_resolves_to_its_target(vault):
    (vault / "Notes" / "real.md").write_text("x")
    (vault / "alias.md").symlink_to(vault / "Notes" / "real.md")
    assert resolve_in_vault(vault, "alias.md") == vault / "Notes" / "real.md"


def test_symlink_loop_is_refused(vault):
    (vault / "loop").symlink_to(vault / "loop")
    with pytest.raises(VaultError):
        resolve_in_vault(vault, "loop/x.md")


@pytest.mark.parametrize(
    "relative", [".obsidian/app.json", ".obsidian", ".Obsidian/plugins/x.js", "Notes/../.obsidian/workspace.json"]
)
def test_config_folder_is_refused(vault, relative):
    with pytest.raises(VaultError, match=r"(?i)\.obsidian"):
        resolve_in_vault(vault, relative)


def test_symlink_into_config_folder_is_refused(vault):
    (vault / "cfg").symlink_to(vault / ".obsidian", target_is_directory=True)
    with pytest.raises(VaultError, match="config folder"):
        resolve_in_vault(vault, "cfg/app.json")


def test_custom_config_folder(vault):
    with pytest.raises(VaultError, match="config folder"):
        resolve_in_vault(vault, ".config/x.json", config_folder=".config")
    # renaming the config folder does not open `.obsidian/` (issue 10: `results_folder: .obsidian`)
    with pytest.raises(VaultError, match="config folder"):
        resolve_in_vault(vault, ".obsidian/x.md", config_folder=".config")
    assert resolve_in_vault(vault, "obsidian2/x.md") == vault / "obsidian2" / "x.md"


@pytest.mark.parametrize("relative", [".hidden/x.md", "Results/.x.md", "a/.b/c.md"])
def test_folders_and_files_obsidian_hides_are_refused(vault, relative):
    with pytest.raises(VaultError, match="Obsidian hides"):
        resolve_in_vault(vault, relative)


def test_nul_byte_is_refused(vault):
    with pytest.raises(VaultError, match="NUL"):
        resolve_in_vault(vault, "a\x00b.md")


def test_result_keeps_the_vaults_spelling(vault, tmp_path):
    """A vault opened through a symlink (macOS /tmp, a synced folder) stays spelled that way,
    so callers can `relative_to` the root they gave."""
    link = tmp_path / "vault-link"
    link.symlink_to(vault, target_is_directory=True)
    assert resolve_in_vault(link, "Notes/a.md") == link / "Notes" / "a.md"


def test_ensure_in_vault_takes_absolute_paths_inside(vault, tmp_path):
    assert ensure_in_vault(vault, vault / "Notes" / "a.md") == vault / "Notes" / "a.md"
    assert ensure_in_vault(vault, "Notes/a.md") == vault / "Notes" / "a.md"
    assert ensure_in_vault(vault, vault.resolve() / "Notes" / "a.md") == vault / "Notes" / "a.md"
    with pytest.raises(VaultError, match="outside the vault"):
        ensure_in_vault(vault, tmp_path / "elsewhere.md")
    with pytest.raises(VaultError, match="outside the vault"):
        ensure_in_vault(vault, vault / "Notes" / ".." / ".." / "x.md")
    with pytest.raises(VaultError, match="config folder"):
        ensure_in_vault(vault, vault / ".obsidian" / "app.json")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Love - Hate sweep", "Love - Hate sweep"),
        ("a: b", "a b"),
        ("Love/Hate #1 [draft]", "Love Hate 1 draft"),
        ("x|y^z%w", "x y z w"),
        ('what? *really* <no> "yes"\\', "what really no yes"),
        ("tab\there\nnewline\x07bell", "tab here newline bell"),
        ("  .hidden. ", "hidden"),
        ("   ", "Untitled"),
        ("###", "Untitled"),
        ("", "Untitled"),
        ("CON", "_CON"),
        ("nul.md", "_nul.md"),
        ("Café 日本", "Café 日本"),
        ("results 2024-01-02 10:30", "results 2024-01-02 10 30"),
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_safe_filename_caps_length_on_a_character_boundary():
    name = safe_filename("é" * 500)
    assert len(name.encode()) <= 200
    assert set(name) == {"é"}


def test_safe_filename_never_leaves_an_unsafe_character():
    every = "".join(chr(code) for code in range(0x00, 0x250))
    name = safe_filename(every)
    assert not re.search(r'[#|^:\[\]%\\/?*<>"\x00-\x1f\x7f]', name)
    assert name == name.strip() and not name.startswith(".")
    assert os.sep not in name
