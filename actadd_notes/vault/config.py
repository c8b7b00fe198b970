"""Per-vault settings: `actadd-notes.yaml` at the vault root, every key optional.

Defaults work with no file at all. A key the tool does not know is an error naming the file
and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from actadd_notes.errors import VaultError
from actadd_notes.vault.notes import read_plain_file
from actadd_notes.vault.paths import resolve_in_vault

__all__ = ["CONFIG_FILE", "ZOTERO_SOURCES", "VaultConfig", "find_vault_root"]

CONFIG_FILE = "actadd-notes.yaml"
ZOTERO_SOURCES = ("local", "web", "bbt")
# Keys naming folders the tool writes into: each must stay inside the vault.
_FOLDERS = ("experiments_folder", "results_folder", "literature_folder", "templates_folder", "artifacts_folder")


@dataclass
class VaultConfig:
    root: Path
    experiments_folder: str = "Experiments"
    results_folder: str = "Results"
    literature_folder: str = "Literature"
    templates_folder: str = "Templates/actadd-notes"  # per-template overrides of the shipped templates
    artifacts_folder: str = "Results/artifacts"
    journal_heading: str = "Lab journal"
    config_folder: str = ".obsidian"
    zotero_sources: list[str] = field(default_factory=lambda: list(ZOTERO_SOURCES))  # tried in this order
    bbt_exports: list[str] = field(default_factory=list)  # vault-relative Better BibTeX exports

    @classmethod
    def load(cls, root: Path) -> VaultConfig:
        """Defaults, then `actadd-notes.yaml` at `root` if present. VaultError names the file and
        key of a bad setting."""
        known = {f.name for f in dataclasses.fields(cls)} - {"root"}
        root = Path(os.path.abspath(root))
        if not root.is_dir():
            raise VaultError(f"vault {root} is not a folder", path=root)
        file = root / CONFIG_FILE
        config = cls(root, **_read_file(file, known))
        config._check(file)
        return config

    def path(self, *parts: str) -> Path:
        """A path inside the vault (VaultError if it leads out or into the config folder)."""
        return resolve_in_vault(self.root, Path(*parts), config_folder=self.config_folder)

    def relative(self, path: Path) -> str:
        """`path` as notes name it: vault-relative, with forward slashes."""
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    def _check(self, file: Path) -> None:
        def bad(key: str, message: str) -> VaultError:
            return VaultError(f"{file}: {key}: {message}", path=file)

        for key in (*_FOLDERS, "journal_heading", "config_folder"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise bad(key, f"must be a non-empty string, not {getattr(self, key)!r}")
        if "/" in self.config_folder or "\\" in self.config_folder or self.config_folder in (".", ".."):
            raise bad("config_folder", f"must be a folder name at the vault root, not {self.config_folder!r}")
        for key in ("zotero_sources", "bbt_exports"):
            value = getattr(self, key)
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise bad(key, f"must be a list of strings, not {value!r}")
        for source in self.zotero_sources:
            if source not in ZOTERO_SOURCES:
                raise bad("zotero_sources", f"unknown source {source!r}: use {', '.join(ZOTERO_SOURCES)}")
        places = [(key, getattr(self, key)) for key in _FOLDERS] + [("bbt_exports", e) for e in self.bbt_exports]
        for key, place in places:
            try:
                self.path(place)
            except VaultError as error:
                raise bad(key, str(error)) from None


def find_vault_root(start: Path) -> Path:
    """The nearest folder at or above `start` that holds `.obsidian/`: the vault."""
    here = Path(os.path.abspath(start))
    for folder in (here, *here.parents):
        if (folder / ".obsidian").is_dir():
            return folder
    raise VaultError(f"{start} is not inside an Obsidian vault (no .obsidian/ folder here or above)", path=start)


def _read_file(file: Path, known: set[str]) -> dict[str, Any]:
    try:
        text = read_plain_file(file).decode("utf-8")  # a FIFO in its place is an error, not a hang
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise VaultError(f"{file}: cannot read: {error}", path=file) from error
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise VaultError(
            f"{file}{where}: invalid YAML: {getattr(error, 'problem', None) or error}", path=file
        ) from None
    except (ValueError, IndexError, KeyError, TypeError, RecursionError) as error:  # a value YAML cannot build
        raise VaultError(f"{file}: cannot read a value ({type(error).__name__}: {error})", path=file) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaultError(f"{file}: must be a mapping of settings, not {type(data).__name__}", path=file)
    for key in data:
        if key not in known:
            guess = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"known: {', '.join(sorted(known))}"
            raise VaultError(f"{file}: unknown setting {key!r}; {hint}", path=file)
    return data
