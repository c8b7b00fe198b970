"""llama.cpp control vectors: GGUF files written and read with the `gguf` package, and the
index convention checked on a tiny model: adding `direction.N` to the output of block N (a
forward hook written here, which is what llama.cpp's `build_cvec(cur, il)` does) must give the
same logits as adding our vector at the input of block N + 1 with `position: all`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny import hook_count, tiny_config, tiny_threads, tiny_tokenizer
from vaults import tiny_model_dir

from actadd_notes.cli import cli
from actadd_notes.errors import SteeringError
from actadd_notes.steering import ActAdd, SteerableLM, SteeringVector
from actadd_notes.steering.control_vectors import (
    ControlVectorWarning,
    PositionMeanWarning,
    direction_index,
    layer_of_direction,
    load_control_vector,
    model_hint_of,
    save_control_vector,
)

pytestmark = pytest.mark.timeout(120)

PROMPT = "I hate you because you are mean."
DEPTH = 5  # blocks 0–4: layers 2, 3, 4 can be exported, as direction.1, .2, .3
WIDTH = 32


def five_block_model(seed: int = 0):
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama")
    config.num_hidden_layers = DEPTH
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def lm() -> SteerableLM:
    return SteerableLM(five_block_model(), tiny_tokenizer(), name="tiny-llama-5")


@pytest.fixture(scope="module")
def five_block_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama-5")
    five_block_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def row(*values: float) -> torch.Tensor:
    return torch.tensor([list(values) * (WIDTH // len(values))], dtype=torch.float32)


def read(path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)


def field_value(reader: gguf.GGUFReader, key: str):
    field = reader.get_field(key)
    assert field is not None, f"no {key}"
    return field.contents(), field.types


def write_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], *, layer_count=None, hint="llama") -> Path:
    """A GGUF file in the layout repeng's and llama.cpp's writers use."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", hint)
    if layer_count is not None:
        layer_count(writer, len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@contextmanager
def block_output_additions(lm: SteerableLM, directions: dict[int, np.ndarray]) -> Iterator[None]:
    """llama.cpp's `build_cvec(cur, il)`: direction `il` added to block il's output, every position."""

    def adding(direction: torch.Tensor):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + direction, *output[1:])
            return output + direction

        return hook

    handles = []
    try:
        for index, data in directions.items():
            handles.append(lm.blocks[index].register_forward_hook(adding(torch.from_numpy(data.copy()))))
        yield
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- the index
def test_layer_l_is_direction_l_minus_1():
    assert [direction_index(layer) for layer in (2, 3, 29)] == [1, 2, 28]
    assert [layer_of_direction(index) for index in (1, 2, 28)] == [2, 3, 29]


@pytest.mark.parametrize("layer", [0, 1])
def test_layers_0_and_1_cannot_be_exported(tmp_path, layer):
    vector = SteeringVector(row(1.0), layer=layer)
    with pytest.raises(SteeringError) as caught:
        save_control_vector(tmp_path / "v.gguf", [vector], model_hint="llama")
    assert str(caught.value).startswith(f"layer {layer}: llama.cpp cannot steer the input of block {layer}.")
    assert "refuses direction.0" in str(caught.value) and "use a layer ≥ 2" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------- the file
def test_the_file_is_what_llama_cpp_reads_names_types_shapes_values_metadata(tmp_path):
    first = SteeringVector(row(1.0, -2.0), layer=2, coeff=2.5, prompt_add="Love", prompt_sub="Hate")
    second = SteeringVector(torch.arange(WIDTH, dtype=torch.float32), layer=4, coeff=-1.0)  # [d]: one position
    path = save_control_vector(tmp_path / "love.gguf", [second, first], model_hint="llama")

    assert path == tmp_path / "love.gguf" and sorted(p.name for p in tmp_path.iterdir()) == ["love.gguf"]
    reader = read(path)
    assert field_value(reader, "general.architecture") == ("controlvector", [gguf.GGUFValueType.STRING])
    assert field_value(reader, "controlvector.model_hint") == ("llama", [gguf.GGUFValueType.STRING])
    assert field_value(reader, "controlvector.layer_count") == (2, [gguf.GGUFValueType.INT32])
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.3"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert tensor.shape.tolist() == [WIDTH]
        assert tensor.data.dtype == np.float32
    assert np.array_equal(reader.tensors[0].data, np.array([2.5, -5.0] * 16, dtype=np.float32))
    assert np.array_equal(reader.tensors[1].data, -np.arange(WIDTH, dtype=np.float32))


def test_reading_our_file_back_gives_position_independent_vectors(tmp_path, lm):
    exported = SteeringVector(row(1.0, -2.0), layer=2, coeff=2.5, prompt_add="Love", prompt_sub="Hate")
    path = save_control_vector(tmp_path / "love.gguf", [exported], model_hint="llama")

    [vector] = load_control_vector(path, lm)
    assert (vector.layer, vector.coeff, vector.prompt_add, vector.prompt_sub) == (2, 1.0, "Love", "Hate")
    assert vector.vector.shape == (1, WIDTH) and vector.vector.dtype == torch.float32
    assert torch.equal(vector.vector, exported.scaled())
    assert (vector.provenance["tensor"], vector.provenance["model_hint"]) == ("direction.1", "llama")
    [scaled] = load_control_vector(path, lm, scale=0.5)  # --control-vector-scaled FILE 0.5
    assert scaled.coeff == 0.5 and torch.equal(scaled.vector, vector.vector)


def test_a_per_position_vector_goes_in_as_its_mean_with_a_warning(tmp_path):
    per_position = SteeringVector(
        torch.cat([row(1.0), row(3.0)]), layer=3, coeff=2.0, prompt_add="Love", prompt_sub="Hate"
    )
    another = SteeringVector(row(10.0), layer=3)
    with pytest.warns(PositionMeanWarning) as caught:
        path = save_control_vector(tmp_path / "v.gguf", [per_position, another], model_hint="llama")
    assert [str(w.message) for w in caught] == [
        "layer 3: the ActAdd vector ('Love' − 'Hate') has 2 positions, but llama.cpp adds one direction at "
        "every token: direction.2 holds their mean (what `position: all` adds), not the per-position front addition"
    ]
    [tensor] = read(path).tensors
    assert tensor.name == "direction.2"
    assert np.array_equal(tensor.data, np.full(WIDTH, 2.0 * (1.0 + 3.0) / 2 + 10.0, dtype=np.float32))


def test_vectors_for_different_models_do_not_mix(tmp_path):
    with pytest.raises(SteeringError, match="layer 3: width 16 differs from the other vectors' 32"):
        save_control_vector(
            tmp_path / "v.gguf",
            [SteeringVector(row(1.0), layer=2), SteeringVector(torch.ones(1, 16), layer=3)],
            model_hint="llama",
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- on the model
def test_direction_n_at_block_n_output_equals_our_vector_at_block_n_plus_1_input(tmp_path, lm):
    additions = [
        ActAdd("Love", "Hate", 2, 3.0),
        ActAdd("Love and peace", "Hate and war", 3, -2.0),
        ActAdd("Happy", "Sad", 4, 1.5),
    ]
    vectors = [lm.steering_vector(a) for a in additions]
    assert all(v.positions > 1 for v in vectors)
    with pytest.warns(PositionMeanWarning):
        path = save_control_vector(tmp_path / "v.gguf", vectors, model_hint=model_hint_of(lm))
    directions = {int(t.name.split(".")[1]): np.array(t.data) for t in read(path).tensors}
    assert sorted(directions) == [1, 2, 3]

    with block_output_additions(lm, directions):  # llama.cpp: direction.N at block N's output
        reference = lm.next_token_logits([PROMPT])
        reference_tokens = lm.complete([PROMPT], max_new_tokens=8, seed=3, top_p=0.9)[0].token_ids
    assert hook_count(lm.model) == 0
    loaded = load_control_vector(path, lm)
    assert [v.layer for v in loaded] == [2, 3, 4]

    ours = lm.next_token_logits([PROMPT], steer=loaded, position="all")
    assert torch.equal(ours, reference)
    assert torch.equal(lm.next_token_logits([PROMPT], steer=vectors, position="all"), reference)
    tokens = lm.complete([PROMPT], max_new_tokens=8, seed=3, top_p=0.9, steer=loaded, position="all")[0].token_ids
    assert tokens == reference_tokens  # every decode step is steered too, as in llama.cpp
    # the test can tell: no steering, or the directions one block late, give other logits
    assert not torch.allclose(lm.next_token_logits([PROMPT]), reference)
    with block_output_additions(lm, {index + 1: data for index, data in directions.items()}):
        assert not torch.allclose(lm.next_token_logits([PROMPT]), reference)


# ------------------------------------------------------------------- others' files
def uint32_count(writer, n):
    writer.add_uint32("controlvector.layer_count", n)  # repeng's export_gguf


def int32_count(writer, n):
    writer.add_int32("controlvector.layer_count", n)  # llama.cpp's cvector-generator


@pytest.mark.parametrize("count", [uint32_count, int32_count], ids=["repeng", "cvector-generator"])
def test_repeng_and_cvector_generator_files_read_as_llama_cpp_applies_them(tmp_path, lm, count):
    rng = np.random.default_rng(0)
    # both write every block's direction but block 0's: direction.1 … direction.(n_layer − 1)
    data = {index: rng.standard_normal(WIDTH).astype(np.float32) for index in range(DEPTH - 1, 0, -1)}
    path = write_gguf(
        tmp_path / "their.gguf", "controlvector", {f"direction.{i}": d for i, d in data.items()}, layer_count=count
    )

    with pytest.warns(ControlVectorWarning) as caught:
        vectors = load_control_vector(path, lm)
    assert [str(w.message) for w in caught] == [
        f"{path}: direction.4 steers the output of the last block, after which only the final norm runs; "
        "actadd-notes steers block inputs only, so it is left out"
    ]
    assert [(v.layer, v.coeff, tuple(v.vector.shape)) for v in vectors] == [
        (2, 1.0, (1, WIDTH)),
        (3, 1.0, (1, WIDTH)),
        (4, 1.0, (1, WIDTH)),
    ]
    for vector in vectors:
        assert torch.equal(vector.vector[0], torch.from_numpy(data[vector.layer - 1]))
    assert "exported_from" not in vectors[0].provenance
    # without a model to check against, every direction comes back, the last one on layer n_layer
    assert [v.layer for v in load_control_vector(path)] == [2, 3, 4, 5]


def f32(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("arch", "tensors", "message"),
    [
        ("llama", {"direction.1": f32(WIDTH)}, "general.architecture is 'llama', not 'controlvector'"),
        ("controlvector", {}, "holds no direction.N tensors, so it steers no layer"),
        ("controlvector", {"direction.0": f32(WIDTH)}, "direction.0, which llama.cpp refuses"),
        ("controlvector", {"direction.x": f32(WIDTH)}, "tensor 'direction.x' is not named direction.N"),
        ("controlvector", {"blk.1.attn_q.weight": f32(WIDTH)}, "is not named direction.N"),
        (
            "controlvector",
            {"direction.1": np.ones(WIDTH, dtype=np.float16)},
            "direction.1 is F16, but llama.cpp takes F32",
        ),
        ("controlvector", {"direction.1": f32(2, WIDTH)}, f"direction.1 has shape [{WIDTH}, 2]"),
        (
            "controlvector",
            {"direction.1": f32(WIDTH), "direction.2": f32(16)},
            "directions of different widths [16, 32]",
        ),
        (
            "controlvector",
            {"direction.1": f32(16)},
            "directions of width 16 do not fit tiny-llama-5, whose hidden size is 32",
        ),
        (
            "controlvector",
            {"direction.6": f32(WIDTH)},
            "direction.6 steers the output of block 6, but tiny-llama-5 has blocks 0–4",
        ),
    ],
    ids=[
        "model-file",
        "no-directions",
        "direction-0",
        "bad-index",
        "other-tensor",
        "f16",
        "2-d",
        "mixed-widths",
        "wrong-width",
        "too-deep",
    ],
)
def test_a_file_that_is_no_control_vector_for_this_model_is_a_clear_error(tmp_path, lm, arch, tensors, message):
    path = write_gguf(tmp_path / "bad.gguf", arch, tensors)
    with pytest.raises(SteeringError) as caught:
        load_control_vector(path, lm)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_file_that_is_no_gguf_is_a_clear_error(tmp_path):
    junk = tmp_path / "notes.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(SteeringError, match=r"notes.gguf: not a GGUF file"):
        load_control_vector(junk)
    with pytest.raises(SteeringError, match=r"missing.gguf: no such file"):
        load_control_vector(tmp_path / "missing.gguf")


# ---------------------------------------------------------------------------- the CLI
def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_vector_format_gguf_writes_one_direction_per_layer(tmp_path, five_block_dir, lm):
    out = tmp_path / "love-hate.gguf"
    result = invoke(
        "vector", "--add", "Love", "--sub", "Hate", "--layer", "2", "--layer", "4", "--strength", "0.5",
        "--model", five_block_dir, "--format", "gguf", "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{out}: llama.cpp control vector, 2 direction(s) × {WIDTH}: layer 2 → direction.1")
    assert f"llama-completion -m MODEL.gguf --control-vector-scaled {out}:1" in result.stdout
    assert "stored at 0.5 residual norms" in result.stdout and "warning" not in result.stderr
    reader = read(out)
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.3"]
    assert field_value(reader, "controlvector.model_hint")[0] == "llama"
    units = json.loads(field_value(reader, "actadd_notes.units")[0])
    for tensor, layer in zip(reader.tensors, (2, 4)):
        content = lm.steering_vector(ActAdd("Love", "Hate", layer, 1.0)).vector[:1].mean(dim=0)  # "Love" is 1 token
        direction = torch.from_numpy(np.array(tensor.data))
        assert torch.nn.functional.cosine_similarity(direction, content, dim=0) > 0.9999
        assert direction.norm().item() == pytest.approx(0.5 * units["residual_norm"][str(layer)], rel=1e-4)


def test_vector_keeps_safetensors_as_the_default_with_one_layer(tmp_path, tiny_model_dir):
    out = tmp_path / "v.safetensors"
    result = invoke(
        "vector", "--add", "Love", "--sub", "Hate", "--layer", "1", "--layer", "2",
        "--model", tiny_model_dir, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        "--layer: a .safetensors vector holds one layer; give one --layer, or --format gguf for several"
        in result.stderr
    )
    assert not out.exists()


def test_vector_gguf_refuses_layer_1_before_loading_the_model(tmp_path):
    out = tmp_path / "v.gguf"
    result = invoke(
        "vector", "--add", "Love", "--sub", "Hate", "--layer", "1",
        "--model", tmp_path / "no-model", "--format", "gguf", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "layer 1: llama.cpp cannot steer the input of block 1." in result.stderr
    assert not out.exists()
