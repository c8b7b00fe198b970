"""Shared fixtures. Every user path (cache, config, Zotero credentials) points into tmp dirs,
so tests never touch a real home directory; the converted embedded model is cached once
per test session, since converting it from GGUF takes ~25 s."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("actadd-cache")


@pytest.fixture(autouse=True)
def _isolated_user_paths(monkeypatch, tmp_path, session_cache):
    monkeypatch.setenv("ACTADD_NOTES_CACHE_DIR", str(session_cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("ZOTERO_API_KEY", "ZOTERO_LIBRARY_ID", "ZOTERO_LIBRARY_TYPE", "ACTADD_NOTES_VAULT"):
        monkeypatch.delenv(name, raising=False)
