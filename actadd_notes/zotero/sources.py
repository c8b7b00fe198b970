"""The sources a vault is configured with, tried in order by `find_item`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actadd_notes.errors import ZoteroError
from actadd_notes.vault.paths import resolve_in_vault
from actadd_notes.zotero.api import LocalApiSource, WebApiSource, web_credentials
from actadd_notes.zotero.bbt import BetterBibTexSource
from actadd_notes.zotero.items import ZoteroItem, ZoteroSource

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = ["SkippedSource", "find_item", "sources_from_config"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSource:
    """A configured source that cannot be used; kept in the list so `doctor` can show the
    reason and `find_item`'s error names it, without a network request."""

    name: str
    reason: str

    def find(self, citekey: str) -> ZoteroItem:
        raise ZoteroError(f"skipped: {self.reason}", source=self.name, item=citekey)


def sources_from_config(config: VaultConfig) -> list[ZoteroSource]:
    """The sources in `config.zotero_sources` order; `bbt` expands to one source per export.
    `web` without credentials and `bbt` without exports become SkippedSource."""
    sources: list[ZoteroSource] = []
    for name in config.zotero_sources:
        if name == "local":
            sources.append(LocalApiSource())
        elif name == "web":
            try:
                credentials = web_credentials()
            except ZoteroError as error:
                sources.append(SkippedSource("web", str(error)))
                continue
            sources.append(
                WebApiSource(
                    library_id=credentials.library_id,
                    api_key=credentials.api_key or None,
                    library_type=credentials.library_type,
                )
            )
        elif name == "bbt":
            if not config.bbt_exports:
                sources.append(SkippedSource("bbt", "no Better BibTeX export listed in bbt_exports"))
            for export in config.bbt_exports:
                path = resolve_in_vault(config.root, export, config_folder=config.config_folder)
                sources.append(BetterBibTexSource(path))
        else:
            raise ZoteroError(f"unknown source {name!r} in zotero_sources: use local, web or bbt", source=name)
    return sources


def find_item(citekey: str, sources: Sequence[ZoteroSource]) -> ZoteroItem:
    """The item from the first source that has it; else one ZoteroError listing every failure.
    The sources turn their own failures into ZoteroErrors; anything else a source raises (a
    source from elsewhere, a bug) is listed the same way, so one lookup never escapes as
    something else and ends a batch of citekeys or a run's publishing."""
    failures: list[str] = []
    for source in sources:
        try:
            return source.find(citekey)
        except ZoteroError as error:
            failures.append(str(error))
        except Exception as error:
            _log.warning("Zotero source %s failed on %s", source.name, citekey, exc_info=error)
            failures.append(f"{source.name} {citekey}: {type(error).__name__}: {error}")
    if not failures:
        raise ZoteroError("no Zotero source is configured (zotero_sources is empty)", item=citekey)
    raise ZoteroError("no Zotero source has it:\n" + "\n".join(f"  - {f}" for f in failures), item=citekey)
