"""Shared fixtures. Every user path (cache, config, Zotero credentials) points into tmp dirs,
so tests never touch a real home directory; the converted embedded model is cached once
per test session, since converting it from GGUF takes ~25 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


@pytest.fixture(scope="session")
def demo_vault(tmp_path_factory, session_cache):
    """`actadd-notes demo` (the README's main job) run once per test session: the example
    vault's Love − Hate sweep on the embedded model, 420 completions (minutes on 2 cores).
    The demo test and the paper's acceptance test both read what it wrote."""
    target = tmp_path_factory.mktemp("demo") / "vault"
    env = {**os.environ, "ACTADD_NOTES_CACHE_DIR": str(session_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from actadd_notes.cli import main; main()",
            "demo",
            str(target),
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=1700,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target, json.loads(done.stdout)
