"""The `actadd-notes` command through click's CliRunner: every command, its --help, --json
output, exit statuses (0 done, 1 failed or an error, 2 bad arguments) and messages.

Models are a tiny random Llama saved as a local folder (see `vaults.tiny_model_dir`);
the end-to-end `demo` on the embedded model is in test_watcher_e2e.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import tiny_threads
from vaults import (
    KONEN,
    TURNER,
    USER_TEXT,
    body,
    example_vault,
    props,
    result_notes,
    tiny_model_dir,
    write_spec,
)

from actadd_notes.cli import cli
from actadd_notes.jobs import DONE, FAILED
from actadd_notes.steering.vectors import SteeringVector
from actadd_notes.vault.notes import Note

pytestmark = pytest.mark.timeout(120)

COMMANDS = ("run", "watch", "new", "lit", "vector", "demo", "doctor", "compare")


def invoke(*args: str | Path, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


# --- help -----------------------------------------------------------------------------------


def test_group_help_lists_every_command_with_examples():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    for command in COMMANDS:
        assert f"\n  {command} " in result.output
    assert invoke("-h").output == result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"actadd-notes {command}" in result.output.split("Example:")[1]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("actadd-notes, version ")


def test_unknown_command_is_a_usage_error():
    result = invoke("runn")
    assert result.exit_code == 2
    assert "No such command 'runn'" in result.stderr


# --- new ------------------------------------------------------------------------------------


def test_new_scaffolds_a_draft_spec_and_never_clobbers(example_vault):
    first = invoke("new", "wedding topic", "--vault", example_vault, "--model", "gpt2")
    assert first.exit_code == 0, first.output
    path = example_vault / "Experiments" / "wedding topic.md"
    assert first.stdout.strip() == str(path)
    p = props(path)
    assert (p["type"], p["status"], p["model"]) == ("actadd-experiment", "draft", "gpt2")
    assert "**wedding topic**" in body(path)
    path.write_text(path.read_text() + "my edits\n")

    second = invoke("new", "wedding topic", "--vault", example_vault)
    assert second.exit_code == 0
    assert second.stdout.strip() == str(example_vault / "Experiments" / "wedding topic 1.md")
    assert path.read_text().endswith("my edits\n")
    assert props(example_vault / "Experiments" / "wedding topic 1.md")["model"] == "embedded"


def test_new_finds_the_vault_from_the_current_folder_or_the_environment(example_vault, tmp_path, monkeypatch):
    monkeypatch.chdir(example_vault / "Literature")
    assert invoke("new", "from cwd").exit_code == 0
    assert (example_vault / "Experiments" / "from cwd.md").is_file()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACTADD_NOTES_VAULT", str(example_vault))
    assert invoke("new", "from env").exit_code == 0
    assert (example_vault / "Experiments" / "from env.md").is_file()


def test_new_uses_the_folders_of_the_vault_config(example_vault):
    config = example_vault / "actadd-notes.yaml"
    config.write_text(config.read_text().replace("experiments_folder: Experiments", "experiments_folder: Lab/Specs"))
    result = invoke("new", "love", "--vault", example_vault)
    assert result.exit_code == 0
    assert (example_vault / "Lab" / "Specs" / "love.md").is_file()


def test_a_bad_vault_config_names_the_file_and_the_key(example_vault):
    (example_vault / "actadd-notes.yaml").write_text("experiment_folder: Specs\n")
    result = invoke("new", "love", "--vault", example_vault)
    assert result.exit_code == 1
    assert "actadd-notes.yaml: unknown setting 'experiment_folder'; did you mean 'experiments_folder'?" in result.stderr


def test_new_outside_a_vault_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("new", "love")
    assert result.exit_code == 1
    assert "is not inside an Obsidian vault" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- lit ------------------------------------------------------------------------------------


def test_lit_imports_a_literature_note_from_the_bundled_export(example_vault):
    result = invoke("lit", KONEN, "--vault", example_vault)
    assert result.exit_code == 0, result.output
    note = example_vault / "Literature" / f"@{KONEN}.md"
    assert result.stdout.strip() == f"{KONEN}: {note}"
    assert props(note)["citekey"] == KONEN
    assert Note.read(note).region("notes") is not None


def test_lit_json_lists_written_and_failed_keys(example_vault):
    result = invoke("lit", f"[[@{KONEN}]]", TURNER, "--vault", example_vault, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "written": {
            KONEN: str(example_vault / "Literature" / f"@{KONEN}.md"),
            TURNER: str(example_vault / "Literature" / f"@{TURNER}.md"),
        },
        "failed": {},
    }


def test_lit_with_an_unknown_citekey_exits_1_naming_it(example_vault):
    result = invoke("lit", KONEN, "noSuchPaper2099", "--vault", example_vault)
    assert result.exit_code == 1
    assert "noSuchPaper2099: " in result.stderr
    assert (example_vault / "Literature" / f"@{KONEN}.md").is_file()  # the others still go through
    assert not (example_vault / "Literature" / "@noSuchPaper2099.md").exists()

    as_json = invoke("lit", "noSuchPaper2099", "--vault", example_vault, "--json")
    assert as_json.exit_code == 1
    assert list(json.loads(as_json.stdout)["failed"]) == ["noSuchPaper2099"]


def test_lit_refresh_keeps_the_users_notes_and_never_drops_a_line_unless_forced(example_vault):
    note = example_vault / "Literature" / f"@{TURNER}.md"
    mine, before = Note.read(note).region("notes"), note.read_bytes()
    refused = invoke("lit", TURNER, "--refresh", "--vault", example_vault)  # the export has no annotations
    assert refused.exit_code == 1 and "--force" in refused.stderr and note.read_bytes() == before
    result = invoke("lit", TURNER, "--refresh", "--force", "--vault", example_vault)
    assert result.exit_code == 0
    assert Note.read(note).region("notes") == mine


def test_lit_needs_a_citekey():
    result = invoke("lit")
    assert result.exit_code == 2
    assert "Missing argument 'CITEKEYS...'" in result.stderr


# --- run ------------------------------------------------------------------------------------


def test_run_writes_the_result_note(example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir, status="draft")
    result = invoke("run", spec, "--device", "cpu")
    assert result.exit_code == 0, result.output
    (note,) = result_notes(example_vault)
    assert re.match(r"done: (detected|not specific|not detected) — best L\d", result.stdout), result.stdout
    assert f"result note: {note}" in result.stdout
    assert props(spec)["status"] == DONE


def test_run_json_is_one_object_for_scripts(example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir)
    result = invoke("run", spec, "--json", "--device", "cpu", "--vault", example_vault)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["status"] == DONE and report["note"] == "Experiments/love.md" and report["error"] is None
    assert (example_vault / report["result_note"]).is_file()
    assert re.match(r"(detected|not specific|not detected) — best L\d", report["summary"]), report["summary"]


@pytest.mark.parametrize(
    ("change", "key"),
    [({"samples": "ten"}, "samples"), ({"layer": 99}, "layer")],
    ids=["samples-ten", "layer-99"],
)
def test_run_on_a_malformed_spec_exits_1_and_says_why_in_the_note(example_vault, tiny_model_dir, change, key):
    spec = write_spec(example_vault, "bad", tiny_model_dir, **change)
    result = invoke("run", spec, "--device", "cpu")
    assert result.exit_code == 1
    assert f"failed: Experiments/bad.md: {key}: " in result.stderr
    p = props(spec)
    assert p["status"] == FAILED and p["error"].startswith(f"Experiments/bad.md: {key}: ")
    note = Note.read(spec)
    assert note.body.startswith(USER_TEXT)
    assert note.region("actadd-error").startswith("> [!error]")
    assert result_notes(example_vault) == []

    as_json = invoke("run", spec, "--json", "--device", "cpu")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["status"] == FAILED


def test_run_outside_any_vault_is_a_clear_error(tmp_path, tiny_model_dir):
    spec = write_spec(tmp_path, "love", tiny_model_dir)  # no .obsidian/ anywhere above
    before = spec.read_bytes()
    result = invoke("run", spec)
    assert result.exit_code == 1
    assert "is not inside an Obsidian vault (no .obsidian/ folder here or above)" in result.stderr
    assert spec.read_bytes() == before


def test_run_refuses_a_note_that_is_no_spec(example_vault):
    readme = example_vault / "README.md"
    before = readme.read_bytes()
    result = invoke("run", readme, "--device", "cpu")
    assert result.exit_code == 1
    assert "README.md: type: None — an experiment note has type: actadd-experiment" in result.stderr
    assert readme.read_bytes() == before


def test_run_bad_arguments(example_vault, tiny_model_dir):
    missing = invoke("run", example_vault / "Experiments" / "nope.md")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    spec = write_spec(example_vault, "love", tiny_model_dir)
    before = spec.read_bytes()
    device = invoke("run", spec, "--device", "tpu9")
    assert device.exit_code == 1 and "device 'tpu9'" in device.stderr
    dtype = invoke("run", spec, "--dtype", "fp8", "--device", "cpu")
    assert dtype.exit_code == 1 and "dtype 'fp8'" in dtype.stderr
    assert spec.read_bytes() == before  # bad flags never touch the note


# --- vector ---------------------------------------------------------------------------------


def test_vector_writes_a_loadable_steering_vector(tmp_path, tiny_model_dir):
    out = tmp_path / "vectors" / "love-hate.safetensors"
    result = invoke(
        "vector", "--add", "Love", "--sub", "Hate", "--layer", "1", "--coeff", "4",
        "--model", tiny_model_dir, "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{out}: ") and "layer 1" in result.stdout
    vector = SteeringVector.load(out)
    assert (vector.layer, vector.coeff, vector.prompt_add, vector.prompt_sub) == (1, 4.0, "Love", "Hate")
    assert vector.vector.shape[-1] == 32  # the tiny model's hidden size


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--add", "Love", "--sub", "Hate", "--out", "v.safetensors"], 2, "Missing option '--layer'"),
        (
            ["--add", "Love", "--sub", "Hate", "--layer", "one", "--out", "v.safetensors"],
            2,
            "'one' is not a valid integer",
        ),
        (["--add", "Love", "--layer", "1", "--out", "v.safetensors"], 2, "Missing option '--sub'"),
        (
            ["--add", "Love", "--sub", "Hate", "--layer", "1", "--out", "v.safetensors", "--device", "tpu9"],
            1,
            "device 'tpu9'",
        ),
        (["--add", "Love", "--sub", "Hate", "--layer", "7", "--out", "v.safetensors", "--device", "cpu"], 1, "layer 7"),
    ],
    ids=["no-layer", "layer-not-int", "no-sub", "bad-device", "layer-out-of-range"],
)
def test_vector_bad_arguments(tmp_path, tiny_model_dir, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("vector", "--model", tiny_model_dir, *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert not (tmp_path / "v.safetensors").exists()


# --- watch, demo ----------------------------------------------------------------------------


def test_watch_bad_arguments(tmp_path, monkeypatch):
    assert invoke("watch", tmp_path / "nope").exit_code == 2
    debounce = invoke("watch", tmp_path, "--debounce-ms", "0")
    assert debounce.exit_code == 2 and "0 is not in the range x>=1" in debounce.stderr
    monkeypatch.chdir(tmp_path)
    outside = invoke("watch", "--device", "cpu")
    assert outside.exit_code == 1 and "is not inside an Obsidian vault" in outside.stderr


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "mine.md").write_text("keep me")
    result = invoke("demo", tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path} is not empty: give a new folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.md"]


def test_demo_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert invoke("demo", tmp_path / "file").exit_code == 2


# --- doctor ---------------------------------------------------------------------------------


def test_doctor_json_lists_its_checks(example_vault):
    result = invoke("doctor", "--vault", example_vault, "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert {"torch", "transformers", "embedded model", "model cache", "vault", "zotero bbt:library.json"} <= set(checks)
    assert all(set(c) == {"name", "ok", "detail", "required"} for c in checks.values())
    assert checks["torch"]["ok"] and checks["transformers"]["ok"] and checks["embedded model"]["ok"]
    assert checks["vault"]["ok"] and str(example_vault) in checks["vault"]["detail"]
    assert "actadd-notes.yaml" in checks["vault"]["detail"]
    assert checks["zotero bbt:library.json"] == {
        "name": "zotero bbt:library.json",
        "ok": True,
        "detail": str(example_vault / "zotero" / "library.json"),
        "required": False,
    }


def test_doctor_text_and_a_missing_vault(example_vault, tmp_path):
    text = invoke("doctor", "--vault", example_vault)
    assert text.exit_code == 0
    assert "ok  vault: " in text.stdout

    missing = invoke("doctor", "--vault", tmp_path / "nope", "--json")
    assert missing.exit_code == 1  # a vault given and not found is a required check failing
    (vault,) = [c for c in json.loads(missing.stdout) if c["name"] == "vault"]
    assert not vault["ok"] and "is not a folder" in vault["detail"]


def test_doctor_outside_a_vault_only_warns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("doctor", "--json")
    assert result.exit_code == 0
    (vault,) = [c for c in json.loads(result.stdout) if c["name"] == "vault"]
    assert vault["ok"] is False and vault["required"] is False


# --- compare --------------------------------------------------------------------------------


def test_compare_tables_the_best_setting_of_every_run(example_vault, tiny_model_dir):
    empty = invoke("compare", "--vault", example_vault, "--json")
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout)["runs"] == 0
    for name in ("first", "second"):
        spec = write_spec(example_vault, name, tiny_model_dir)
        assert invoke("run", spec, "--device", "cpu").exit_code == 0
    result = invoke("compare", "--vault", example_vault, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"] == 2
    note = Path(report["note"])
    text = note.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [[Results/")]
    assert len(rows) == 2
    runs = [path for path in result_notes(example_vault) if props(path).get("type") == "actadd-result"]
    assert len(runs) == 2
    for path in runs:
        run = props(path)
        link = path.relative_to(example_vault).with_suffix("").as_posix()
        (row,) = [r for r in rows if f"[[{link}]]" in r]
        assert f"| {run['best_layer']} |" in row and f"| {run['objective']} |" in row
    again = invoke("compare", "--vault", example_vault)  # a refresh rewrites the same note
    assert again.exit_code == 0 and str(note) in again.stdout
    assert len(list(note.parent.glob("Sweep comparison*.md"))) == 1
