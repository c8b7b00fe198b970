"""Vault fixtures and helpers for the CLI, job and watcher tests.

`example_vault` is a fresh copy of `vault_example/` per test; `tiny_model_dir` is a tiny
random Llama with its tokenizer, saved once per session with `save_pretrained`, so a spec's
`model:` can name it and the real `load_model` loads it. Spec notes are written by
`write_spec` with the work sized by name: `QUICK` (about a second) or `SLOW` (a few seconds
in many small batches, for tests that act in the middle of a run).

Import the fixtures into a test module: `from vaults import example_vault, tiny_model_dir`;
`vault` is an empty vault (a folder holding `.obsidian/`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actadd_notes.vault.notes import Note

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_VAULT = ROOT / "vault_example"
TURNER = "turnerActivationAdditionSteering2024"  # has a literature note in the example vault
KONEN = "konenStyleVectorsSteering2024"  # in the bundled Better BibTeX export only

USER_TEXT = "My own words about this run: they must come back byte for byte.\n\n## Notes\n- a thought\n"

QUICK = {"layer": [0, 1], "coeff": [1, 4], "samples": 4, "max_new_tokens": 8}
SLOW = {"layer": [0, 1, 2], "coeff": [1, 2, 4], "samples": 16, "max_new_tokens": 20, "batch_size": 2}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 3-layer random Llama and its tokenizer, saved as a local model folder."""
    from tiny import one_torch_thread, tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    with one_torch_thread():
        tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def vault(tmp_path) -> Path:
    """An empty vault: a folder holding `.obsidian/`."""
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    return root


@pytest.fixture
def example_vault(tmp_path) -> Path:
    """A copy of the example vault (config: Better BibTeX export only, so it works offline)."""
    vault = tmp_path / "vault"
    shutil.copytree(EXAMPLE_VAULT, vault)
    return vault


@pytest.fixture
def idle_vault(example_vault) -> Path:
    """The example vault with its specs (on the slow embedded model) set to draft: a watcher
    started on it has nothing to run until a test queues something."""
    for spec in (example_vault / "Experiments").glob("*.md"):
        spec.write_text(spec.read_text().replace("status: queued", "status: draft", 1))
    return example_vault


def spec_text(
    model: Path | str,
    *,
    status: str = "queued",
    work: dict[str, Any] = QUICK,
    literature: list[str] = (f"[[@{TURNER}]]",),
    body: str = USER_TEXT,
    **extra: Any,
) -> str:
    """A spec note in the layout Obsidian writes (flow lists, a quoted wikilink list)."""
    props: dict[str, Any] = {
        "type": "actadd-experiment",
        "status": status,
        "model": str(model),
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        **work,
        "prompts": ["I hate you because"],
        "seed": 0,
        "metrics": "[sentiment, fluency]",
        "literature": literature,
        **extra,
    }
    lines = ["---"]
    for key, value in props.items():
        if isinstance(value, (list, tuple)):
            value = "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n---\n" + body


def write_spec(vault: Path, name: str, model: Path | str, **options: Any) -> Path:
    path = vault / "Experiments" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_text(model, **options), encoding="utf-8")
    return path


def save_like_obsidian(path: Path, text: str, *, chunks: int = 3, pause: float = 0.01) -> None:
    """Open with truncate, then write in chunks with a flush after each: several modify events."""
    size = -(-len(text) // chunks)
    with open(path, "w", encoding="utf-8") as file:
        for start in range(0, len(text), size):
            file.write(text[start : start + size])
            file.flush()
            os.fsync(file.fileno())
            time.sleep(pause)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, *, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def props(path: Path) -> dict[str, Any]:
    return dict(Note.read(path).properties)


def status(path: Path) -> str | None:
    """The note's status, or None while it cannot be read (mid-save)."""
    try:
        return Note.read(path).properties.get("status")
    except Exception:
        return None


def body(path: Path) -> str:
    return Note.read(path).body


def result_notes(vault: Path) -> list[Path]:
    return sorted((vault / "Results").glob("*.md"))


def journal_lines(vault: Path, needle: str = "[[Results/") -> list[str]:
    """Lines of every daily note that link a result (or hold `needle`)."""
    return [
        line
        for note in sorted((vault / "Journal").glob("*.md"))
        for line in note.read_text(encoding="utf-8").splitlines()
        if needle in line
    ]


def experiment_lines(vault: Path, citekey: str = TURNER) -> list[str]:
    """The lines of a literature note's `experiments` region."""
    region = Note.read(vault / "Literature" / f"@{citekey}.md").region("experiments") or ""
    return [line for line in region.splitlines() if line.strip()]
