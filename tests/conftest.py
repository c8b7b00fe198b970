"""Shared fixtures. Every user path (cache, config, Zotero credentials) points into tmp dirs,
so tests never touch a real home directory; the converted embedded model is cached once
per test session, since converting it from GGUF takes ~25 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# The sampler's Triton kernels run in Triton's interpreter on the tests' CPU tensors: the switch is read
# when a kernel is defined, so it is set before anything imports `sampling_kernels`.
os.environ.setdefault("TRITON_INTERPRET", "1")

# `actadd-notes demo` runs inside whichever test first asks for `demo_vault`: a few minutes
# on an idle 2-core machine, many more on a loaded one. Every test that uses the fixture gets
# this pytest-timeout (pytest_collection_modifyitems), and the demo's own subprocess gives up
# first, so a slow machine fails with the demo's stderr rather than a bare timeout.
DEMO_TEST_TIMEOUT_S = 1800
DEMO_RUN_TIMEOUT_S = DEMO_TEST_TIMEOUT_S - 100


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "demo_vault" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker("timeout")
        seconds = None if marker is None else (marker.args[0] if marker.args else marker.kwargs.get("timeout"))
        if seconds is None or 0 < seconds < DEMO_TEST_TIMEOUT_S:
            item.add_marker(pytest.mark.timeout(DEMO_TEST_TIMEOUT_S), append=False)


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
    vault's Love − Hate sweep on the embedded model and its confirmation, 600 completions (minutes on 2 cores).
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
        timeout=DEMO_RUN_TIMEOUT_S,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target, json.loads(done.stdout)
