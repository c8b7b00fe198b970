"""Vectors that carry their effect into llama.cpp and back (issue 23): what a gguf export holds and at
what strength, `vector --check` and `--import`, llama.cpp's rejection caught, and vector files in specs
(`method: vector`) run through the whole harness. Tiny random models from `tiny.py`; the embedded
SmolLM2 where the check needs a real one; every file is real (written by the `gguf` package)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny import N_LAYERS, tiny_lm, tiny_threads
from vaults import tiny_model_dir, vault, write_spec

from actadd_notes.cli import cli
from actadd_notes.errors import SpecError, SteeringError, VaultError
from actadd_notes.experiments.additions import ResidualNorms
from actadd_notes.experiments.exports import DEFAULT_STRENGTH, export_vectors
from actadd_notes.experiments.llama_cpp import llama_cpp_check
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.spec import ExperimentSpec, parse_spec
from actadd_notes.jobs import DONE, JobRunner, ModelSlot
from actadd_notes.steering.control_vectors import export_rows, save_control_vector
from actadd_notes.steering.vector_files import VectorFile
from actadd_notes.steering.vectors import ActAdd, SteeringVector
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note

pytestmark = pytest.mark.timeout(300)
_ = (tiny_model_dir, vault, tiny_threads)  # fixtures

WIDTH = 32
PROMPTS = ["I hate you because", "The weather today is"]


@pytest.fixture(scope="module")
def llama():
    return tiny_lm("llama")


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def repeng_gguf(path: Path, directions: dict[int, np.ndarray], *, dtype=np.float32, hint: str = "llama") -> Path:
    """A control vector as repeng's `ControlVector.export_gguf` writes one: `direction.{layer}` per layer."""
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for index, direction in directions.items():
        writer.add_tensor(f"direction.{index}", direction.astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def direction(seed: int, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(width).astype(np.float32)


# ------------------------------------------------------------------ what an export holds
@pytest.mark.parametrize("prepend_bos", [False, True])
def test_the_export_keeps_the_content_positions_and_leaves_out_the_padding(prepend_bos):
    lm = tiny_lm("llama", prepend_bos=prepend_bos)
    vector = lm.steering_vector(ActAdd("Love", "I hate you all", 2))  # "Love" is padded on the right
    shorter = len(lm.encode("Love").ids) - (1 if prepend_bos else 0)
    assert vector.positions > shorter  # there are pad rows to leave out
    assert export_rows(vector, lm) == range(0, shorter)
    exported = export_vectors(lm, [vector], strength=0.5, prompts=PROMPTS).vectors[0]
    content = vector.vector[:shorter].float().mean(dim=0)
    everything = vector.vector.float().mean(dim=0)
    assert torch.nn.functional.cosine_similarity(exported.vector[0], content, dim=0) > 0.9999
    assert torch.nn.functional.cosine_similarity(exported.vector[0], everything, dim=0) < 0.999
    assert exported.provenance["export"] == f"content positions (rows 0–{shorter - 1} of {vector.positions})"


def test_the_stored_strength_is_in_the_units_the_file_records(llama, tmp_path):
    vector = llama.steering_vector(ActAdd("Love", "Hate", 2))
    export = export_vectors(llama, [vector], strength=-0.75, prompts=PROMPTS)
    typical = ResidualNorms.measure(llama, ExperimentSpec(prompts=tuple(PROMPTS))).typical[2]
    assert export.units["unit"] == "residual_norm" and export.units["strength"] == -0.75
    assert export.units["residual_norm"]["2"] == pytest.approx(typical, rel=1e-4)
    stored = export.vectors[0].vector[0]
    assert stored.norm().item() == pytest.approx(0.75 * typical, rel=1e-5)
    content = vector.vector[export_rows(vector, llama).start : export_rows(vector, llama).stop].mean(dim=0)
    assert torch.nn.functional.cosine_similarity(stored, content, dim=0) < -0.9999  # negative flips it
    path = save_control_vector(tmp_path / "v.gguf", export.vectors, model_hint="llama", units=export.units)
    field = gguf.GGUFReader(path).get_field("actadd_notes.units")
    assert json.loads(bytes(field.parts[field.data[0]]).decode()) == json.loads(json.dumps(export.units))


def test_the_help_states_the_default_strength():
    result = invoke("vector", "--help")
    assert f"default {DEFAULT_STRENGTH:g};" in " ".join(result.stdout.split())


def test_from_pairs_exports_the_mean_difference_at_the_stored_strength(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.md"
    pairs.write_text("| add | sub |\n|---|---|\n| I love you | I hate you |\n| Joy | Grief |\n", encoding="utf-8")
    out = tmp_path / "pairs.gguf"
    result = invoke(
        "vector", "--from-pairs", pairs, "--layer", "2", "--format", "gguf", "--out", out, "--model", tiny_model_dir,
        "--device", "cpu", "--prompt", PROMPTS[0],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "layer 2 → direction.1 (its one row)" in result.stdout and "try 0.5–2" in result.stdout
    described = invoke("vector", "--import", out, "--model", tiny_model_dir, "--device", "cpu", "--prompt", PROMPTS[0])
    assert described.exit_code == 0, described.output
    lines = described.stdout.splitlines()
    assert lines[0] == f"{out}: gguf, model hint llama, width {WIDTH}, stored at {DEFAULT_STRENGTH:g} residual_norm"
    assert re.search(
        rf"layer 2 \(direction.1\): norm [\d.]+ = {DEFAULT_STRENGTH:g} × the residual norm", described.stdout
    )
    assert lines[-1] == f"  fits {Path(tiny_model_dir).name} ({N_LAYERS} layers, width {WIDTH})"


def test_import_says_when_a_file_does_not_fit_the_model(tmp_path, tiny_model_dir):
    wide = repeng_gguf(tmp_path / "wide.gguf", {1: direction(0, 48)}, hint="qwen2")
    result = invoke("vector", "--import", wide, "--model", tiny_model_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "model hint qwen2, width 48, units unknown" in result.stdout
    assert f"does not fit: {wide}: directions of width 48 do not fit" in result.stdout


def test_import_of_a_malformed_file_names_it_before_any_model_loads(tmp_path):
    bad = repeng_gguf(tmp_path / "bad.gguf", {0: direction(0)})
    result = invoke("vector", "--import", bad, "--model", tmp_path / "no-model")
    assert result.exit_code == 1
    assert f"{bad}: direction.0, which llama.cpp refuses" in result.stderr and "no-model" not in result.stderr


# ------------------------------------------------------------------ measured, not assumed
def test_check_reports_the_effect_with_an_interval_on_the_embedded_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-completion here
    out = tmp_path / "love-hate.gguf"
    result = invoke(
        "vector", "--add", "Love", "--sub", "Hate", "--layer", "6", "--format", "gguf", "--out", out, "--check",
        "--samples", "3", "--prompt", "I hate you because", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = re.search(
        r"actadd-notes \(position: all\), scale 1: sentiment ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] vs unsteered "
        r"\(n = 3\), perplexity ratio ([\d.]+)",
        result.stdout,
    )
    assert found, result.stdout
    estimate, low, high, ratio = map(float, found.groups())
    assert low <= estimate <= high and ratio > 0
    assert "llama.cpp: no llama-completion on PATH — the cross-engine check is skipped" in result.stdout


def fake_llama_completion(folder: Path, stderr: str) -> str:
    """A stand-in for llama-completion that logs `stderr` and completes with a fixed text, exit 0."""
    binary = folder / "llama-completion"
    binary.write_text(f"#!/bin/sh\nprintf '%s\\n' '{stderr}' >&2\nprintf ' you are kind.'\nexit 0\n")
    binary.chmod(0o755)
    return str(binary)


def test_llama_cpps_silent_rejection_is_an_error(tmp_path, llama):
    vector = repeng_gguf(tmp_path / "v.gguf", {1: direction(0)})
    rejecting = fake_llama_completion(
        tmp_path, "0.00.330.844 E cmn  common_contr: failed to load control vector file from v.gguf"
    )
    with pytest.raises(SteeringError, match=r"v.gguf: llama.cpp rejected the control vector: cmn  common_contr: fail"):
        llama_cpp_check(llama, rejecting, tmp_path / "m.gguf", vector, ["Hi"], samples=2, max_new_tokens=3)
    (tmp_path / "ok").mkdir()
    accepting = fake_llama_completion(tmp_path / "ok", "0.00.001.182 I llama_completion: llama backend init")
    check = llama_cpp_check(llama, accepting, tmp_path / "m.gguf", vector, ["Hi"], samples=2, max_new_tokens=3)
    assert check.engine == "llama.cpp (llama-completion)" and check.completions == 2
    assert check.examples == [" you are kind.", " you are kind."]


# ------------------------------------------------------------------ vector files in specs
def spec_of(path: Path, **properties):
    base = {"method": "vector", "vector": f"[[Vectors/{path.name}]]", "prompts": PROMPTS, "samples": 2,
            "max_new_tokens": 4, "metrics": ["sentiment"], "coeff": [1], "max_perplexity_ratio": 1000}  # fmt: skip
    return parse_spec(base | properties, note="Experiments/v.md", resolve_vector=lambda link: path)[0]


def test_a_repeng_file_lands_on_the_layer_after_its_index(tmp_path, llama):
    # repeng (and cvector-generator) write the last block's output too: direction.N_LAYERS − 1 → no layer of ours
    path = repeng_gguf(tmp_path / "repeng.gguf", {1: direction(1), N_LAYERS - 1: direction(2)})
    spec = spec_of(path)
    assert spec.layers == (2, N_LAYERS) and spec.position == "all"
    result = run_experiment(spec, llama)
    assert [s.setting.layer for s in result.settings] == [2]
    assert result.best is not None and result.best.setting.layer == 2
    assert torch.equal(result.vectors["vector-L2"].vector[0], torch.from_numpy(direction(1)))


def test_a_file_written_by_the_tool_lands_on_its_layer(tmp_path, llama):
    source = llama.steering_vector(ActAdd("Love", "Hate", 1))
    export = export_vectors(llama, [source], strength=0.5, prompts=PROMPTS)
    vector = export.vectors[0]
    gguf_path = save_control_vector(tmp_path / "tool.gguf", [replace_layer(vector, 2)], model_hint="llama")
    tensors = SteeringVector(vector.vector * 3, layer=1, coeff=0.5).save(tmp_path / "tool.safetensors")
    for path, layer, expected in ((gguf_path, 2, vector.vector[0]), (tensors, 1, vector.vector[0] * 1.5)):
        result = run_experiment(spec_of(path), llama)
        assert result.best is not None and result.best.setting.layer == layer
        assert torch.allclose(result.vectors[f"vector-L{layer}"].vector[0], expected)


def replace_layer(vector: SteeringVector, layer: int) -> SteeringVector:
    return SteeringVector(vector.vector, layer=layer, coeff=vector.coeff)


def test_a_vector_spec_runs_from_a_note_to_a_result(vault, tiny_model_dir, tiny_threads):
    (vault / "Vectors").mkdir()
    repeng_gguf(vault / "Vectors" / "kind.gguf", {1: direction(3), 2: direction(4)})
    spec = write_spec(
        vault, "kind", tiny_model_dir, method="vector", vector='"[[Vectors/kind.gguf]]"',
        work={"coeff": [0.1, 0.2], "samples": 2, "max_new_tokens": 4}, literature=[], max_perplexity_ratio=1000,
        max_repetition_increase=1, max_special_token_increase=1,
    )  # fmt: skip
    text = spec.read_text().replace("prompt_add: Love\nprompt_sub: Hate\n", "")
    spec.write_text(text)
    outcome = JobRunner(VaultConfig.load(vault), models=ModelSlot(device="cpu")).run(spec)
    assert outcome.status == DONE, outcome.error
    assert Note.read(spec).properties["best_layer"] == 2  # direction.1; direction.2 is the last block's output
    assert outcome.result_note is not None
    result = Note.read(outcome.result_note).properties
    assert result["method"] == "vector" and list(result["layers"]) == [2]


@pytest.mark.parametrize(
    ("tensors", "dtype", "message"),
    [
        ({0: direction(0)}, np.float32, "direction.0, which llama.cpp refuses"),
        ({1: direction(0)}, np.float16, "direction.1 is F16, but llama.cpp takes F32 directions only"),
        ({1: direction(0), 2: direction(1, 16)}, np.float32, "directions of different widths [16, 32]"),
    ],
    ids=["direction-0", "not-f32", "mixed-widths"],
)
def test_a_malformed_file_is_an_error_naming_the_note_key_and_file(tmp_path, tensors, dtype, message):
    path = repeng_gguf(tmp_path / "bad.gguf", tensors, dtype=dtype)
    with pytest.raises(SpecError) as caught:
        spec_of(path)
    assert caught.value.note == "Experiments/v.md" and caught.value.key == "vector"
    assert str(caught.value).startswith(f"Experiments/v.md: vector: {path}: ") and message in str(caught.value)


def test_a_layer_the_file_lacks_is_an_error_naming_the_file(tmp_path):
    path = repeng_gguf(tmp_path / "one.gguf", {1: direction(0)})
    with pytest.raises(SpecError, match=rf"layer: 1: {re.escape(str(path))} steers layers 2 only") as caught:
        spec_of(path, layer=[1, 2])
    assert caught.value.note == "Experiments/v.md"


def test_a_file_of_another_width_fails_before_any_forward_pass(tmp_path, llama):
    spec = spec_of(repeng_gguf(tmp_path / "wide.gguf", {1: direction(0, 48)}))
    handle = llama.model.register_forward_pre_hook(lambda *_: pytest.fail("a forward pass ran"))
    try:
        with pytest.raises(SpecError, match=r"vector: .*wide.gguf: directions of width 48 do not fit") as caught:
            run_experiment(spec, llama, note="Experiments/v.md")
    finally:
        handle.remove()
    assert caught.value.note == "Experiments/v.md"


def test_a_vector_link_without_a_vault_or_of_another_kind_is_refused(tmp_path, vault):
    with pytest.raises(SpecError, match=r"vector: \[\[Vectors/x.gguf\]\] — a link to a vector file needs a vault"):
        parse_spec({"method": "vector", "vector": "[[Vectors/x.gguf]]", "prompts": ["Hi"], "coeff": 1})
    (vault / "notes.md").write_text("hi")
    runner = JobRunner(VaultConfig.load(vault), models=ModelSlot(device="cpu"))
    with pytest.raises(VaultError, match=r"'notes.md' is not a vector file — link a .gguf or .safetensors file"):
        runner._vector_file("[[notes.md]]")


def test_a_model_file_is_refused_before_it_is_read_whole(tmp_path):
    huge = tmp_path / "model.gguf"
    with huge.open("wb") as handle:
        handle.truncate(300 * 2**20)  # sparse: no 300 MiB written
    with pytest.raises(SteeringError, match=r"model.gguf: 300 MiB — too large for a vector file \(a model\?\)"):
        VectorFile.read(huge)
