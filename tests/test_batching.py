"""Batch plans: a deterministic function of the request, the device's name and total memory, and the model."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_lm, tiny_threads

from actadd_notes.steering.batching import (
    CPU_ROWS,
    GIB,
    DeviceSpec,
    ModelShape,
    balanced,
    fixed,
    generation_plan,
    scoring_plan,
)
from actadd_notes.steering.decode import batch_bucket

H200 = DeviceSpec("cuda", "NVIDIA H200", 150_110_011_392)  # 139.8 GiB: what torch reports for the card used here
LLAMA_3_8B = ModelShape(
    layers=32,
    hidden=4096,
    heads=32,
    kv_width=8 * 128,
    intermediate=14336,
    vocab=128256,
    weight_bytes=16_060_522_496,
    dtype_bytes=2,
)


def test_balanced_batches_are_as_even_as_possible():
    assert balanced(130, 64) == (44, 43, 43)
    assert balanced(128, 64) == (64, 64)
    assert balanced(5, 64) == (5,)
    assert balanced(0, 64) == ()
    assert sum(balanced(20_000, 3_000)) == 20_000 and max(balanced(20_000, 3_000)) <= 3_000


def test_fixed_batches_are_the_asked_size():
    plan = fixed(130, 64)
    assert plan.sizes == (64, 64, 2) and plan.basis == "batch_size 64"
    assert [(s.start, s.stop) for s in plan.slices()] == [(0, 64), (64, 128), (128, 130)]


def test_the_issue_8_sweep_is_one_batch_on_an_h200():
    plan = generation_plan(576, 32, 64, LLAMA_3_8B, H200)
    assert plan.sizes == (576,)
    assert 576 < plan.limit < 10_000
    assert plan.basis.startswith("auto (NVIDIA H200, 139.8 GiB total, weights 15.0 GiB, ")
    assert plan == generation_plan(576, 32, 64, LLAMA_3_8B, H200)  # a function of its arguments, nothing else


def test_longer_generations_and_smaller_cards_get_smaller_batches():
    base = generation_plan(20_000, 32, 64, LLAMA_3_8B, H200).limit
    assert generation_plan(20_000, 32, 512, LLAMA_3_8B, H200).limit < base
    assert generation_plan(20_000, 512, 64, LLAMA_3_8B, H200).limit < base
    small = DeviceSpec("cuda", "NVIDIA L4", 24 * GIB)
    assert generation_plan(20_000, 32, 64, LLAMA_3_8B, small).limit < base
    too_small = DeviceSpec("cuda", "tiny card", 17 * GIB)
    assert generation_plan(3, 32, 64, LLAMA_3_8B, too_small).sizes == (1, 1, 1)  # never zero rows


def test_plans_round_down_to_rows_whose_bucket_fits():
    for rows in (70, 500, 1000, 5000):
        plan = generation_plan(rows * 3, 32, 64, LLAMA_3_8B, H200)
        assert batch_bucket(max(plan.sizes)) <= batch_bucket(plan.limit)


def test_scoring_keeps_logits_for_the_completion_only():
    plan = scoring_plan(576, 96, 65, LLAMA_3_8B, H200)
    assert plan.sizes == (576,)
    assert scoring_plan(576, 96, 300, LLAMA_3_8B, H200).limit < plan.limit


def test_the_cpu_plan_is_fixed_rows():
    cpu = DeviceSpec.of(torch.device("cpu"))
    assert cpu == DeviceSpec("cpu", "cpu", 0)
    plan = generation_plan(130, 32, 64, LLAMA_3_8B, cpu)
    assert plan.limit == CPU_ROWS and plan.sizes == (44, 43, 43) and plan.basis == f"auto (cpu: {CPU_ROWS} rows)"


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3", "gemma"])
def test_the_model_shape_is_read_from_the_model(family):
    lm = tiny_lm(family)
    shape = ModelShape.of(lm.model, lm.num_layers)
    config = lm.model.config
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", heads)
    head_dim = getattr(config, "head_dim", None) or 32 // heads
    assert (shape.layers, shape.hidden, shape.heads) == (3, 32, heads)
    assert shape.kv_width == kv_heads * head_dim
    assert shape.vocab == lm.model.get_output_embeddings().weight.shape[0]
    assert shape.dtype_bytes == 4
    assert shape.weight_bytes == sum(t.numel() * 4 for t in (*lm.model.parameters(), *lm.model.buffers()))
