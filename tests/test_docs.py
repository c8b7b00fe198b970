"""The README documents the public surface; these tests keep the two from drifting apart."""

from __future__ import annotations

import re
from pathlib import Path

import actadd_notes
from actadd_notes.cli import cli
from actadd_notes.experiments.spec import SPEC_KEYS

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text under `## title`, up to the next level-2 heading outside a code block."""
    lines, inside, fenced = [], False, False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            inside = line == f"## {title}"
            continue
        if inside:
            lines.append(line)
    assert lines, f"README has no '## {title}' section"
    return "\n".join(lines)


def test_every_exported_name_is_documented_in_the_python_api_section():
    api = _section("Python API")
    missing = [
        name
        for name in actadd_notes.__all__
        if name != "__version__" and f"`{name}" not in api and f"import {name}" not in api and f" {name}," not in api
    ]
    assert not missing, f"exported but not documented: {missing}"


def test_every_exported_name_resolves():
    for name in actadd_notes.__all__:
        assert getattr(actadd_notes, name) is not None


def test_every_cli_command_is_documented():
    commands = _section("Command line")
    assert set(cli.commands) == {"run", "watch", "new", "lit", "vector", "demo", "doctor", "compare"}
    for name in cli.commands:
        assert f"actadd-notes {name}" in commands


def test_every_spec_key_is_in_the_readme_table():
    table = _section("The experiment note")
    documented = set(
        re.findall(r"`([a-z_]+)`", "\n".join(line for line in table.splitlines() if line.startswith("| `")))
    )
    assert documented >= SPEC_KEYS, f"undocumented spec keys: {sorted(SPEC_KEYS - documented)}"


def test_readme_gives_exactly_the_two_fresh_machine_commands_and_ci_runs_the_test_one():
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
