"""Per-vault settings: `actadd-notes.yaml` at the vault root, every key optional.

Defaults work with no file at all. A key the tool does not know is an error naming the file
and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from actadd_notes.errors import VaultError
from actadd_notes.vault.notes import read_plain_file
from actadd_notes.vault.paths import resolve_in_vault

__all__ = ["CONFIG_FILE", "EXECUTORS", "ZOTERO_SOURCES", "VaultConfig", "find_vault_root"]

CONFIG_FILE = "actadd-notes.yaml"
ZOTERO_SOURCES = ("local", "web", "bbt")
EXECUTORS = ("local", "ray")
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
    executor: str = "local"  # where rows are generated: this process, or "ray" (the `ray` extra)
    ray_address: str | None = None  # a running Ray cluster ("auto", "host:6379"); none: a local instance
    ray_actors: int | None = None  # default: one per GPU of the cluster
    ray_gpus_per_actor: float | None = None  # > 1: a model split over that many GPUs
    concurrent_specs: int = 1  # specs the watcher runs at once (more than 1 only with `executor: ray`)

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
        self._check_executor(bad)
        places = [(key, getattr(self, key)) for key in _FOLDERS] + [("bbt_exports", e) for e in self.bbt_exports]
        for key, place in places:
            try:
                self.path(place)
            except VaultError as error:
                raise bad(key, str(error)) from None

    def _check_executor(self, bad: Callable[[str, str], VaultError]) -> None:
        if self.executor not in EXECUTORS:
            raise bad("executor", f"{self.executor!r}: use {' or '.join(EXECUTORS)}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise bad("ray_address", f"must be an address such as auto or head-node:6379, not {self.ray_address!r}")
        for key in ("ray_actors", "concurrent_specs"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096):
                raise bad(key, f"must be a whole number from 1 to 4096, not {value!r}")
        gpus = self.ray_gpus_per_actor
        if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 < gpus <= 64):
            raise bad("ray_gpus_per_actor", f"must be a number of GPUs above 0 (at most 64), not {gpus!r}")
        if self.concurrent_specs > 1 and self.executor != "ray":
            raise bad("concurrent_specs", "more than one spec at a time needs `executor: ray` (one GPU runs one job)")


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
