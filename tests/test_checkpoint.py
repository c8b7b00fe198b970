"""Reading a saved model folder straight into its parameters (steering/checkpoint.py): the model
`load_model` returns is the one transformers would load, for every family the engine supports, and a
folder it cannot read that way says why and still loads through transformers."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import FAMILIES, one_torch_thread, tiny_config, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

from actadd_notes.errors import ModelError
from actadd_notes.steering import checkpoint
from actadd_notes.steering.models import load_model


def saved(tmp_path, family="llama", *, tied=False, **options):
    folder = tmp_path / family
    with one_torch_thread():
        if tied:
            config = tiny_config(family)
            config.tie_word_embeddings = True
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        else:
            model = tiny_model(family)
        model.save_pretrained(folder, **options)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def assert_same_model(got, want):
    params, expected = dict(got.named_parameters()), dict(want.named_parameters())
    assert params.keys() == expected.keys()
    for name, tensor in expected.items():
        assert params[name].dtype == tensor.dtype and torch.equal(params[name], tensor), name
    buffers, expected = dict(got.named_buffers()), dict(want.named_buffers())
    assert buffers.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(buffers[name], tensor), name
    assert not got.training
    ids = torch.tensor([[1, 5, 9, 14, 3], [2, 8, 4, 4, 7]])
    assert torch.equal(got(ids).logits, want(ids).logits)


# transformers 5 saves GPT-NeoX under its legacy names (embed_out) and renames them when it loads
RENAMED_ON_SAVE = {"gpt_neox"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_as_transformers_would_load_it(tmp_path, family):
    folder = saved(tmp_path, family)
    with one_torch_thread():
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        lm = load_model(str(folder), device="cpu", dtype="float32")
        read_directly = isinstance(checkpoint.plan(lm.model, folder), list)
        assert read_directly == (family not in RENAMED_ON_SAVE)
        assert_same_model(lm.model, reference)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shards_tied_embeddings_and_a_cast_to_another_dtype(tmp_path, dtype):
    folder = saved(tmp_path, "llama", tied=True, max_shard_size="40KB")
    assert len(list(folder.glob("model-*.safetensors"))) > 3 and (folder / checkpoint.INDEX).is_file()
    with one_torch_thread():
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
        lm = load_model(str(folder), device="cpu", dtype=dtype)
    entries = checkpoint.plan(lm.model, folder)
    assert "lm_head.weight" not in {entry.name for entry in entries}  # the tied head comes from the embedding
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    assert_same_model(lm.model, reference)


def rewrite(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_checkpoint_that_needs_renaming_or_misses_a_tensor_says_why_and_loads_through_transformers(tmp_path):
    renamed = saved(tmp_path / "renamed")
    rewrite(renamed, lambda t: t.__setitem__("model.norm.gamma", t.pop("model.norm.weight")))
    with one_torch_thread():
        reference = tiny_model("llama")
        lm = load_model(str(renamed), device="cpu", dtype="float32")
        reason = checkpoint.plan(lm.model, renamed)
    assert reason == "the checkpoint's model.norm.gamma is no parameter of the model (it needs transformers' renaming)"
    assert torch.equal(lm.model.model.norm.weight, reference.model.norm.weight)  # transformers renamed it

    missing = saved(tmp_path / "missing")
    rewrite(missing, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with one_torch_thread():
        reason = checkpoint.plan(tiny_model("llama"), missing)
    assert reason == "the model's model.layers.1.mlp.up_proj.weight is not in the checkpoint"


def test_folders_without_safetensors_or_with_a_broken_index_are_not_read(tmp_path):
    model = tiny_model("llama")
    assert checkpoint.plan(model, tmp_path) == "no safetensors weights in the folder"
    (tmp_path / checkpoint.INDEX).write_text("{not json")
    assert checkpoint.plan(model, tmp_path).startswith(f"{checkpoint.INDEX} cannot be read")
    (tmp_path / checkpoint.INDEX).write_text(json.dumps({"weight_map": {"lm_head.weight": "../outside.safetensors"}}))
    assert checkpoint.plan(model, tmp_path) == f"{checkpoint.INDEX} names files outside the folder"


def test_a_header_whose_byte_range_disagrees_with_its_shape_is_not_read(tmp_path):
    folder = saved(tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    begin, end = header["model.norm.weight"]["data_offsets"]
    header["model.norm.weight"]["data_offsets"] = [begin, end - 4]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    assert checkpoint.plan(tiny_model("llama"), folder) == "model.norm.weight: its byte range does not match its shape"


def test_a_truncated_weights_file_is_a_model_error_naming_the_file(tmp_path):
    folder = saved(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(ModelError, match=r"model\.safetensors ends inside"), one_torch_thread():
        load_model(str(folder), device="cpu", dtype="float32")
