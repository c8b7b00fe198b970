"""`actadd-notes doctor`: what a user needs to see when something is off."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from actadd_notes.errors import ActaddError

if TYPE_CHECKING:
    from actadd_notes.zotero.bbt import BetterBibTexSource
    from actadd_notes.zotero.items import ZoteroSource


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def checks(vault: Path | None = None) -> list[Check]:
    return [_torch(), _transformers(), _embedded(), _cache(), *_vault(vault)]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch() -> Check:
    try:
        import torch
    except ImportError:
        return Check("torch", False, "not installed: pip install torch (CPU: torch==2.13.0)")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("torch", True, f"{torch.__version__}, CUDA {torch.version.cuda}: {names}")
    mps = getattr(torch.backends, "mps", None)
    where = "Apple MPS" if mps and mps.is_available() else "no GPU — runs on the CPU (slower, same results)"
    return Check("torch", True, f"{torch.__version__}, {where}")


def _transformers() -> Check:
    version = _version("transformers")
    if version is None:
        return Check("transformers", False, "not installed")
    major = int(version.split(".")[0])
    return Check(
        "transformers",
        major >= 5,
        version if major >= 5 else f"{version}: needs ≥ 5 (4.x mangles the embedded tokenizer)",
    )


def _embedded() -> Check:
    from actadd_notes.steering.models import embedded_gguf

    try:
        return Check("embedded model", True, str(embedded_gguf()))
    except ActaddError as error:
        return Check("embedded model", False, str(error))


def _cache() -> Check:
    from actadd_notes.steering.models import cache_dir

    converted = sorted((cache_dir() / "embedded").glob("*/config.json"))
    detail = f"{cache_dir()}: " + (
        "converted embedded model cached" if converted else "empty (the first load converts the GGUF, ~25 s)"
    )
    return Check("model cache", True, detail, required=False)


def _vault(vault: Path | None) -> list[Check]:
    from actadd_notes.vault.config import VaultConfig, find_vault_root
    from actadd_notes.zotero import sources_from_config

    try:
        root = vault.resolve() if vault is not None else find_vault_root(Path.cwd())
        config = VaultConfig.load(root)
    except ActaddError as error:
        return [Check("vault", False, f"{error} (pass --vault or run inside a vault)", required=vault is not None)]
    settings = "actadd-notes.yaml" if (config.root / "actadd-notes.yaml").is_file() else "defaults"
    found = [Check("vault", True, f"{config.root} (config: {settings})")]
    for source in sources_from_config(config):
        ok, detail = _reachable(source)
        found.append(Check(f"zotero {source.name}", ok, detail, required=False))
    return found


def _reachable(source: ZoteroSource) -> tuple[bool, str]:
    """A TCP connect to the local API; an export read as a lookup reads it (see `_export`)."""
    import socket
    from urllib.parse import urlparse

    from actadd_notes.zotero import BetterBibTexSource, LocalApiSource, SkippedSource

    if isinstance(source, SkippedSource):
        return False, source.reason
    if isinstance(source, BetterBibTexSource):
        return _export(source)
    if isinstance(source, LocalApiSource):
        url = urlparse(source.base_url)
        try:
            socket.create_connection((url.hostname, url.port or 80), timeout=1).close()
        except OSError:
            return (
                False,
                f"{source.base_url} not reachable: start Zotero 7 and allow other applications (Settings → Advanced)",
            )
        return True, f"{source.base_url} reachable"
    return True, "configured (not contacted)"


def _export(source: BetterBibTexSource) -> tuple[bool, str]:
    """An export is ok only if a lookup could read every entry of it: a file that is there but
    truncated, not JSON, or holding entries BibTeX cannot parse is what a user needs to see.
    The parse is the one lookups share (once per version of the file, within its deadline)."""
    from actadd_notes.errors import ZoteroError

    if not source.path.is_file():
        return False, f"{source.path} is missing"
    try:
        contents = source.contents()
    except ZoteroError as error:
        return False, str(error).removeprefix(f"{source.name}: ")
    if not contents.malformed:
        return True, str(source.path)
    count = len(contents.malformed)
    shown = "; ".join(f"{label}: {reason}" for label, reason in list(contents.malformed.items())[:5])
    more = f"; and {count - 5} more" if count > 5 else ""
    entries = "entry" if count == 1 else "entries"
    return False, f"{source.path}: {count} malformed {entries} a lookup cannot read — {shown}{more}"
