"""The engine's own decode loop (static KV cache, compiled steps) against transformers' `generate`.

`decode="eager"` is the engine as it was: `generate` with the steering hooks and the seeded logits
processors. Every other path must give the same tokens for the same seeds in float32, across
families, with per-row steering mixing steered and unsteered rows, left padding, `position: all`
and EOS. Compiled paths use `torch.compile(backend="aot_eager", fullgraph=True)`: that traces the
whole step (a graph break would fail) without generating kernels, which costs seconds here.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from tiny import FAMILIES, hook_count, tiny_config, tiny_lm, tiny_threads, tiny_tokenizer
from transformers import AutoModelForCausalLM

from actadd_notes.steering import ActAdd, SteerableLM
from actadd_notes.steering.decode import STATIC_FAMILIES, batch_bucket, decode_support, length_bucket

PROMPTS = [
    "I hate you because you are mean.",
    "Hi there",
    "The weather today is nice and",
    "I hate you because you are mean.",
    "Anger is",
]
SEEDS = [11, 5, 11, 11, 42]
LOVE = ActAdd("Love", "Hate", layer=1, coeff=4.0)
STEER = [
    [LOVE],
    None,
    [ActAdd("Happy people", "Sad", layer=2, coeff=-2.0), ActAdd("Love", "Hate", layer=0, coeff=1.5)],
    None,  # same prompt and seed as row 0, unsteered
    [LOVE],
]
PAPER = {"temperature": 1.0, "top_p": 0.3, "freq_penalty": 1.0}
SAMPLINGS = [
    PAPER,
    {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "freq_penalty": 0.5},
    {"temperature": 0},
]


def tokens(completions) -> list[tuple[int, ...]]:
    return [c.token_ids for c in completions]


def both(lm: SteerableLM, decode: str, **kwargs):
    eager = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, decode="eager", **kwargs)
    other = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, decode=decode, **kwargs)
    return eager, other


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("position", ["front", "all"])
def test_the_static_loop_matches_generate_token_for_token(family, position):
    lm = tiny_lm(family, prepend_bos=True)
    for sampling in SAMPLINGS:
        eager, static = both(lm, "static", max_new_tokens=12, position=position, **sampling)
        if family not in STATIC_FAMILIES:
            assert lm.last_generation.decode == "eager"
            assert f"{family} is not among the families" in lm.last_generation.reason
        else:
            assert lm.last_generation.decode == "static", lm.last_generation.reason
        assert tokens(static) == tokens(eager), sampling
        assert [c.text for c in static] == [c.text for c in eager]
    assert static[0].token_ids != static[3].token_ids  # steering moved row 0 away from its unsteered twin
    assert hook_count(lm.model) == 0


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "qwen3"])
def test_compiled_steps_trace_whole_and_match_generate(family):
    lm = tiny_lm(family, prepend_bos=True)
    lm.compile_backend = "aot_eager"
    for position in ("front", "all"):
        eager, compiled = both(lm, "compiled", max_new_tokens=10, position=position, **PAPER)
        assert lm.last_generation.decode == "compiled", lm.last_generation.reason
        assert "compiled with aot_eager" in lm.last_generation.reason
        assert tokens(compiled) == tokens(eager), position
    # the same bucket and sampling again: nothing is traced anew
    before = dict(torch._dynamo.utils.counters["stats"])
    again = lm.complete(
        PROMPTS, seeds=SEEDS, steer=STEER, decode="compiled", max_new_tokens=10, position="all", **PAPER
    )
    assert tokens(again) == tokens(eager)
    assert dict(torch._dynamo.utils.counters["stats"]).get("unique_graphs") == before.get("unique_graphs")
    assert hook_count(lm.model) == 0


def test_the_compiled_radix_sampler_matches_generate():
    from actadd_notes.steering.decode import Decoder

    lm = tiny_lm("llama", prepend_bos=True)
    lm._decoders["compiled"] = Decoder(lm.model, lm.blocks, backend="aot_eager", top_p_method="radix")
    eager, compiled = both(lm, "compiled", max_new_tokens=10, **PAPER)
    assert tokens(compiled) == tokens(eager)
    assert "radix top-p" in lm.last_generation.sampler


def test_the_triton_sampler_in_the_decode_loop_matches_generate():
    """The default on CUDA, here with the kernels in Triton's interpreter: the loop's buffers go to them as
    they are, and the rows sample what the processors sample."""
    from actadd_notes.steering.decode import Decoder

    lm = tiny_lm("llama", prepend_bos=True)
    lm._decoders["static"] = Decoder(lm.model, lm.blocks, backend=None, top_p_method="triton")
    for position in ("front", "all"):
        eager, static = both(lm, "static", max_new_tokens=10, position=position, **PAPER)
        assert lm.last_generation.decode == "static", lm.last_generation.reason
        assert tokens(static) == tokens(eager), position
    assert lm.last_generation.sampler == "sample_tokens (top-p and seeded Gumbel noise as Triton kernels)"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_rows_end_at_eos_as_generate_ends_them(family):
    lm = tiny_lm(family, prepend_bos=True)
    greedy = lm.complete(PROMPTS, max_new_tokens=30, temperature=0, decode="eager")
    counts = torch.bincount(torch.tensor([t for c in greedy for t in c.token_ids]))
    lm.tokenizer.eos_token = lm.tokenizer.convert_ids_to_tokens(int(counts.argmax()))  # a token the model repeats
    for sampling in SAMPLINGS:
        eager, static = both(lm, "static", max_new_tokens=30, **sampling)
        assert tokens(static) == tokens(eager)
        assert any(len(c.token_ids) < 30 for c in eager), sampling
        assert all(lm.tokenizer.eos_token_id not in c.token_ids for c in static)


def test_a_batch_padded_to_its_bucket_gives_the_rows_alone():
    lm = tiny_lm("qwen2", prepend_bos=True)
    assert batch_bucket(len(PROMPTS)) == 8  # three rows of padding
    batched = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=9, **PAPER)
    for row in range(len(PROMPTS)):
        alone = lm.complete([PROMPTS[row]], seeds=[SEEDS[row]], steer=[STEER[row]], max_new_tokens=9, **PAPER)
        assert alone[0].token_ids == batched[row].token_ids, row


@pytest.mark.parametrize("position", ["front", "all"])
def test_a_sweep_prefills_each_setting_once_and_gives_generates_tokens(position):
    """The samples of one setting share prompt and vectors: one prefill row serves all of them."""
    lm = tiny_lm("llama", prepend_bos=True)
    settings = [None, [LOVE], [ActAdd("Love", "Hate", layer=2, coeff=-3.0)], [LOVE]]
    steer = [entry for entry in settings for _ in range(3)]
    prompts = [PROMPTS[0]] * 6 + [PROMPTS[2]] * 6
    seeds = [0, 1, 2] * 4
    prefills = []
    handle = lm.model.register_forward_pre_hook(lambda m, a, k: prefills.append(k["input_ids"].shape), with_kwargs=True)
    want = lm.complete(prompts, seeds=seeds, steer=steer, max_new_tokens=10, decode="eager", position=position, **PAPER)
    handle.remove()
    prefills.clear()
    handle = lm.model.register_forward_pre_hook(lambda m, a, k: prefills.append(k["input_ids"].shape), with_kwargs=True)
    try:
        # a hook on the model sends `auto` to generate; ask for the static loop's parts directly
        from actadd_notes.steering.sampling import Sampling

        got = lm._complete_batch_static(
            lm._decoder("static"),
            prompts,
            [lm.encode(p) for p in prompts],
            seeds,
            lm._per_row(steer, len(prompts)),
            Sampling(**PAPER),
            10,
            position,
            lm.stop_ids(),
        )
    finally:
        handle.remove()
    assert tokens(got) == tokens(want)
    assert prefills[0][0] == 4  # 12 rows, 4 distinct (prompt, vectors) pairs
    assert len({c.token_ids for c in got[:3]}) == 3  # and each sample still draws its own tokens


def test_buckets():
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 16, 17, 64, 65, 560, 576, 577)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        576,
        576,
        640,
    ]
    assert [length_bucket(n) for n in (1, 32, 33, 96, 97)] == [32, 32, 64, 96, 128]


# ------------------------------------------------------------------ falling back, never crashing
def test_a_steering_block_around_complete_decodes_with_generate():
    lm = tiny_lm("llama", prepend_bos=True)
    with lm.steering(LOVE, position="all"):
        inside = lm.complete(PROMPTS[:2], seeds=SEEDS[:2], max_new_tokens=8, **PAPER)
        assert lm.last_generation.decode == "eager"
        assert "hooks of its own" in lm.last_generation.reason
    want = lm.complete(PROMPTS[:2], seeds=SEEDS[:2], steer=LOVE, position="all", max_new_tokens=8, **PAPER)
    assert tokens(inside) == tokens(want)
    assert hook_count(lm.model) == 0


def test_unsupported_models_and_lengths_fall_back_with_a_reason():
    assert (
        decode_support(tiny_lm("opt").model, 40) == "opt is not among the families the static decode loop is tested on"
    )
    config = tiny_config("mistral")
    config.sliding_window = 16
    torch.manual_seed(0)
    lm = SteerableLM(AutoModelForCausalLM.from_config(config).eval(), tiny_tokenizer(), prepend_bos=True)
    out = lm.complete(PROMPTS[:1], max_new_tokens=20, **PAPER)
    assert lm.last_generation.decode == "eager"
    assert (
        lm.last_generation.reason == f"{len(lm.encode(PROMPTS[0]).ids) + 20} positions exceed the sliding window of 16"
    )
    assert len(out[0].token_ids) == 20
    lm.complete(PROMPTS[:1], max_new_tokens=4, **PAPER)
    assert lm.last_generation.decode == "static"


@torch._dynamo.register_backend(name="actadd_test_broken")
def _broken_backend(graph_module, example_inputs):
    raise RuntimeError("no compiler on this machine")


def test_a_failing_compile_decodes_with_generate_and_says_so():
    lm = tiny_lm("llama", prepend_bos=True)
    lm.compile_backend = "actadd_test_broken"
    want = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=6, decode="eager", **PAPER)
    got = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=6, decode="compiled", **PAPER)
    assert tokens(got) == tokens(want)
    record = lm.last_generation
    assert record.decode == "eager" and record.reason.startswith("the compiled decode step failed to build: ")
    assert "no compiler on this machine" in record.reason
    lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=2, decode="compiled", **PAPER)
    assert lm.last_generation.reason.startswith("the compiled decode step failed to build earlier: ")
    assert hook_count(lm.model) == 0


# ------------------------------------------------------------------ the record of how it ran
def test_the_generation_record_says_how_rows_were_batched():
    lm = tiny_lm("llama")
    prompts = ["one two three", "four five six seven"] * 65
    lm.complete(prompts, max_new_tokens=2, **PAPER)
    record = lm.last_generation.to_record()
    assert record == {
        "generation_decode": "static",
        "generation_decode_reason": "CPU: static cache, steps not compiled (compiling costs more than it saves here)",
        "generation_batches": "44 + 43×2",
        "generation_batch_plan": "auto (cpu: 64 rows)",
        "generation_dtype": "float32",
        "generation_device": "cpu",
        "generation_sampler": "sample_tokens (sort top-p, sparse seeded Gumbel noise)",
        "generation_stop_ids": "2 <eos>",
    }
    lm.complete(prompts, max_new_tokens=2, batch_size=64, decode="eager", **PAPER)
    record = lm.last_generation.to_record()
    assert record["generation_batches"] == "64×2 + 2" and record["generation_batch_plan"] == "batch_size 64"
    assert record["generation_decode"] == "eager" and record["generation_decode_reason"] == "decode: eager"
    assert record["generation_sampler"] == "transformers logits processors + seeded Gumbel"
    completions = lm.complete(prompts[:3], max_new_tokens=2, **PAPER)
    assert lm._decoders["static"]._buckets  # the static buffers stay for the next call of the same shape
    lm.perplexities(completions)
    assert lm.last_scoring.to_record()["scoring_batches"] == "3"
    assert not lm._decoders["static"]._buckets  # scoring freed them: its plan counts on the whole device


def test_out_of_memory_halving_is_recorded():
    lm = tiny_lm("llama")
    prompts = ["one two three"] * 6

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")

    handle = lm.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        lm.complete(prompts, max_new_tokens=2, batch_size=5, **PAPER)
    finally:
        handle.remove()
    record = lm.last_generation
    assert record.batches == (2, 2, 2) and record.halved
    assert record.to_record()["generation_batch_plan"] == "batch_size 5 — halved after running out of memory"


def test_bad_decode_modes_are_refused():
    from actadd_notes.errors import SteeringError

    with pytest.raises(SteeringError, match="decode: 'fast'"):
        tiny_lm().complete(["Hi"], decode="fast")
    with pytest.raises(SteeringError, match="batch_size: 0"):
        tiny_lm().complete(["Hi"], batch_size=0)
