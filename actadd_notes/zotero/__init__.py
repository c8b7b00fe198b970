"""Zotero items by citekey, from whichever source the user has: the Zotero 7 local API, the
web API, or a Better BibTeX export file in the vault.

Every source answers `find(citekey) -> ZoteroItem` or raises `ZoteroError` naming itself and
the citekey, so `find_item` can try them in the configured order and say why each failed; a
source that misbehaves (no answer within its deadline, endless paging, malformed JSON, a
body over 32 MiB after decompression, a redirect to another host, an export that does not
parse within its deadline) is a ZoteroError too, and so is anything else a source raises.
Credentials for the web API come from the environment or the user config file, never from a
note: notes are synced and shared, keys must not be.

    items.py    the item model and Zotero's field names
    api.py      the local and web API: rate limits, an overall deadline, a page cap, credentials
    bbt.py      Better BibTeX exports (Better CSL JSON, BetterBibTeX JSON, .bib)
    sources.py  the configured sources, and `find_item` over them
"""

from __future__ import annotations

from actadd_notes.zotero.api import (
    LOCAL_API_URL,
    WEB_API_URL,
    Clock,
    LocalApiSource,
    SystemClock,
    WebApiSource,
    WebCredentials,
    user_config_path,
    web_credentials,
)
from actadd_notes.zotero.bbt import BetterBibTexSource, ExportContents
from actadd_notes.zotero.items import Annotation, Attachment, Creator, ZoteroItem, ZoteroSource, citekey_of
from actadd_notes.zotero.sources import SkippedSource, find_item, sources_from_config

__all__ = [
    "LOCAL_API_URL",
    "WEB_API_URL",
    "Annotation",
    "Attachment",
    "BetterBibTexSource",
    "Clock",
    "Creator",
    "ExportContents",
    "LocalApiSource",
    "SkippedSource",
    "SystemClock",
    "WebApiSource",
    "WebCredentials",
    "ZoteroItem",
    "ZoteroSource",
    "citekey_of",
    "find_item",
    "sources_from_config",
    "user_config_path",
    "web_credentials",
]
