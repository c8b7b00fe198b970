"""The README documents the public surface; these tests keep the two from drifting apart."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import torch
from tiny import hook_count, one_torch_thread, tiny_config, tiny_tokenizer

import actadd_notes
from actadd_notes.cli import cli
from actadd_notes.experiments.spec import SPEC_KEYS
from actadd_notes.steering import models
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.vectors import SteeringVector

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


def _code_block(section: str, language: str) -> str:
    """The first ```language block of the README section `section`."""
    found = re.search(rf"```{language}\n(.*?)```", _section(section), re.S)
    assert found, f"README's '## {section}' has no ```{language} block"
    return found.group(1)


def _run_block(code: str, namespace: dict[str, object]) -> list[object]:
    """Run `code` in `namespace`; returns the values of its top-level expression statements, in order."""
    tree = ast.parse(code)
    values: list[object] = []
    namespace["_values"] = values
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Expr):
            append = ast.parse("_values.append(None)").body[0]
            append.value.args = [node.value]
            tree.body[index] = ast.copy_location(append, node)
    exec(compile(ast.fix_missing_locations(tree), "README.md: Python API", "exec"), namespace)
    return values


def _tiny_load_model(calls: list[tuple[str, dict[str, object]]]):
    """`load_model` as the README calls it, answering with a random 10-layer Llama (the block
    steers layers 6 and 8): everything after the load runs for real."""
    from transformers import AutoModelForCausalLM

    def load_model(name: str = "embedded", **options: object) -> SteerableLM:
        calls.append((name, options))
        config = tiny_config("llama")
        config.num_hidden_layers = 10
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        return SteerableLM(model, tiny_tokenizer(), name="tiny-llama-10")

    return load_model


def test_the_python_api_block_runs_as_written(monkeypatch, tmp_path):
    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(actadd_notes, "load_model", _tiny_load_model(calls), raising=False)
    monkeypatch.setattr(models, "load_model", actadd_notes.load_model)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    with one_torch_thread():
        generated, per_row, _save = _run_block(_code_block("Python API", "python"), namespace)

    assert calls == [("embedded", {})]
    assert isinstance(generated, list) and len(generated) == 4 and all(isinstance(t, str) for t in generated)
    assert isinstance(per_row, list) and len(per_row) == 3 and all(isinstance(t, str) for t in per_row)
    lm = namespace["lm"]
    assert isinstance(lm, SteerableLM) and lm.model is namespace["model"] and lm.tokenizer is namespace["tokenizer"]
    logits = namespace["logits"]
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32
    assert logits.shape == (1, lm.model.config.vocab_size)
    assert namespace["out"].logits.shape[:2] == (1, len(lm.tokenizer("I hate you because")["input_ids"]))
    assert hook_count(lm.model) == 0
    vector = namespace["vector"]
    assert isinstance(vector, SteeringVector) and vector.layer == 6
    saved = SteeringVector.load(tmp_path / "love-hate-L6.safetensors")
    assert torch.equal(saved.vector, vector.vector) and saved.layer == 6


def _cli_lines() -> list[list[str]]:
    """The words after the program (`actadd-notes` or `python -m actadd_notes`) of each line of
    the README's command-line block, comments dropped."""
    block = _code_block("Command line", "sh")
    lines = [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]
    programs = (["actadd-notes"], ["python", "-m", "actadd_notes"])
    for words in lines:
        assert any(words[: len(p)] == p for p in programs), f"not an actadd-notes command line: {words}"
    return [words[1:] if words[0] == "actadd-notes" else words[3:] for words in lines]


def _options(command: click.Command) -> set[str]:
    names = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return names | set(command.get_help_option_names(click.Context(command)))


def test_the_command_line_block_shows_every_command_with_real_options():
    lines = _cli_lines()
    shown = {words[0] for words in lines if words and words[0] in cli.commands}
    assert shown == set(cli.commands), f"commands missing from the README block: {sorted(set(cli.commands) - shown)}"
    for words in lines:
        group_level = not words or words[0].startswith("-")  # `actadd-notes --help`
        assert group_level or words[0] in cli.commands, f"{words[0]!r} is not a command of the CLI"
        command = cli if group_level else cli.commands[words[0]]
        given = {w.strip("[]").split("=")[0] for w in words if w.strip("[]").startswith("-")}
        unknown = given - _options(command)
        assert not unknown, f"{' '.join(words)}: the README shows {sorted(unknown)}, which the CLI does not take"


def _module_map() -> list[str]:
    return re.findall(r"^- `(actadd_notes/[^`]+)` — \S", _section("Development"), re.M)


def test_the_development_section_maps_every_module_once():
    listed = _module_map()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({m for m in listed if listed.count(m) > 1})}"
    package = Path(actadd_notes.__file__).parent
    tree = {p.relative_to(package.parent).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert set(listed) - tree == set(), "listed but not in the tree"
    assert tree - set(listed) == set(), "in the tree but not listed in README's Development section"
    assert listed == sorted(listed, key=lambda m: (m.count("/"), m.split("/")[1:-1], m)), "keep the map in tree order"
