"""The ActAdd engine on tiny random models, checked against tests/reference_actadd.py.

Every model here is built twice from the same seed when needed: `lm` (the engine's) and a
pristine twin for the reference, so the engine's model never sees transformers' hidden-state
capture hooks and "no hook left" can be asserted as `== 0`.
"""

from __future__ import annotations

import copy
import json
import math
import struct

import pytest
import reference_actadd as ref
import torch
from tiny import (
    N_LAYERS,
    SYSTEM_PROMPT,
    hook_count,
    tiny_lm,
    tiny_model,
    tiny_mpt,
    tiny_threads,
    tiny_tokenizer,
)

from actadd_notes.errors import ModelError, SteeringError
from actadd_notes.steering import ActAdd, SteerableLM, SteeringPlan, SteeringVector, find_blocks, load_model
from actadd_notes.steering.hooks import recording_block_inputs, steering_hooks

PROMPT = "I hate you because you are mean."
LOVE = ActAdd("Love", "Hate", layer=1, coeff=4.0)
HAPPY = ActAdd("Happy people", "Sad", layer=2, coeff=-3.0)


def ids_of(lm: SteerableLM, text: str) -> torch.Tensor:
    return torch.tensor([lm.encode(text).ids])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


def ref_add(lm: SteerableLM, twin, addition: ActAdd, start: int) -> ref.Add:
    vector = ref.actadd_vector(
        twin, lm.tokenizer, addition.prompt_add, addition.prompt_sub, addition.layer, lm.prepend_bos
    )
    return ref.Add(addition.layer, addition.coeff * vector, start)


# ------------------------------------------------------------------ hooks come off
def test_hooks_off_after_normal_exit():
    lm, pristine = tiny_lm(prepend_bos=True), tiny_model()
    ids = ids_of(lm, PROMPT)
    before = logits(pristine, ids)
    assert hook_count(lm.model) == 0
    with lm.steering(LOVE) as vectors:
        assert [v.layer for v in vectors] == [1]
        assert hook_count(lm.model) == 2  # one position hook on the model, one add hook on block 1
        steered = logits(lm.model, ids)
    assert not torch.allclose(steered, before, atol=1e-3)
    assert torch.equal(logits(lm.model, ids), before)
    assert hook_count(lm.model) == 0


def test_hooks_off_after_an_exception_inside_the_block():
    class Boom(Exception):
        pass

    lm, pristine = tiny_lm(prepend_bos=True), tiny_model()
    ids = ids_of(lm, PROMPT)
    with pytest.raises(Boom, match="inside the steering block"):
        with lm.steering(LOVE, HAPPY):
            logits(lm.model, ids)
            raise Boom("inside the steering block")
    assert hook_count(lm.model) == 0
    assert torch.equal(logits(lm.model, ids), logits(pristine, ids))


def test_hooks_off_after_a_bad_layer_index():
    lm, pristine = tiny_lm(prepend_bos=True), tiny_model()
    ids = ids_of(lm, PROMPT)
    good = lm.steering_vector(LOVE)
    bad = SteeringVector(good.vector, layer=N_LAYERS + 2, coeff=1.0)
    with pytest.raises(SteeringError, match=f"tiny-llama has layers 0–{N_LAYERS - 1}"):
        with lm.steering(LOVE, ActAdd("Love", "Hate", layer=N_LAYERS)):
            pass
    with pytest.raises(SteeringError, match=f"layers 0–{N_LAYERS - 1}"):
        with lm.steering(good, bad):
            pass
    # the low-level context manager too, with a good layer listed before the bad one
    with pytest.raises(SteeringError, match=f"layer {N_LAYERS + 2}: this model has layers 0–{N_LAYERS - 1}"):
        with steering_hooks(lm.model, lm.blocks, SteeringPlan(shared=(good, bad))):
            pass
    with pytest.raises(SteeringError, match=f"layers 0–{N_LAYERS - 1}"):
        lm.next_token_logits([PROMPT, PROMPT], steer=[[good], [bad]])
    assert hook_count(lm.model) == 0
    assert torch.equal(logits(lm.model, ids), logits(pristine, ids))


def test_hooks_off_after_an_error_raised_inside_a_forward_pass():
    lm, pristine = tiny_lm(prepend_bos=True), tiny_model()
    long = ActAdd("Love and peace, not hate and war.", "Hate", layer=1)
    with pytest.raises(SteeringError, match="covers"):
        lm.next_token_logits(["Hi"], steer=long)
    with pytest.raises(SteeringError, match="covers"):
        lm.complete(["Hi"], steer=long, max_new_tokens=2)
    assert hook_count(lm.model) == 0
    ids = ids_of(lm, "Hi")
    assert torch.equal(logits(lm.model, ids), logits(pristine, ids))


# ------------------------------------------------------------------ the vector itself
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_steering_vector_matches_the_reference(prepend_bos):
    lm, twin = tiny_lm(prepend_bos=prepend_bos), tiny_model()
    for addition in (LOVE, HAPPY, ActAdd("Sad", "Happy people", layer=0, coeff=2.0, pad_token="x")):
        expected = ref.all_vectors(
            twin, lm.tokenizer, addition.prompt_add, addition.prompt_sub, prepend_bos, addition.pad_token
        )
        add_ids, sub_ids = ref.padded_pair(
            lm.tokenizer, addition.prompt_add, addition.prompt_sub, prepend_bos, addition.pad_token
        )
        for layer in range(N_LAYERS):
            vector = lm.steering_vector(
                ActAdd(addition.prompt_add, addition.prompt_sub, layer, addition.coeff, addition.pad_token)
            )
            assert vector.vector.shape == (len(add_ids) - int(prepend_bos), 32)
            assert (vector.vector - expected[layer]).abs().max() <= 1e-5
            assert vector.layer == layer and vector.coeff == addition.coeff
            assert (vector.add_ids, vector.sub_ids) == (tuple(add_ids), tuple(sub_ids))
            assert vector.provenance["prepend_bos"] == str(prepend_bos)
            assert vector.provenance["model"] == "tiny-llama"
    assert hook_count(lm.model) == 0


def test_a_vector_computed_inside_a_steering_block_is_not_steered():
    lm, clean = tiny_lm(prepend_bos=True), tiny_lm(prepend_bos=True)
    early = ActAdd("Love and peace, not hate", "Hate", layer=0, coeff=4.0)  # longer than the next pair
    with lm.steering(early):
        inside = lm.steering_vector(HAPPY)
        assert torch.equal(inside.vector, clean.steering_vector(HAPPY).vector)
        # and a per-row steer resolved inside the block stacks on top of the block's steering
        got = lm.next_token_logits([PROMPT], steer=HAPPY)
    want = clean.next_token_logits([PROMPT], steer=[early, HAPPY])
    assert (got - want).abs().max() <= 1e-5
    assert torch.equal(lm.steering_vector(HAPPY).vector, inside.vector)  # the cache holds the clean one
    assert hook_count(lm.model) == 0


def test_default_prepend_bos_follows_the_tokenizer():
    assert tiny_lm().prepend_bos is False  # the tiny tokenizer adds no BOS by itself
    assert tiny_lm(prepend_bos=True).encode("Hi").ids[0] == tiny_tokenizer().bos_token_id


# ------------------------------------------------------------------ where the addition lands
@pytest.mark.parametrize("layer", range(N_LAYERS))
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_steering_changes_block_inputs_from_the_steered_layer_on(layer, prepend_bos):
    lm = tiny_lm(prepend_bos=prepend_bos)
    ids = ids_of(lm, PROMPT)
    addition = ActAdd("Love", "Hate", layer=layer, coeff=3.0)
    layers = range(N_LAYERS)
    with torch.inference_mode():
        with recording_block_inputs(lm.blocks, layers) as clean:
            lm.model(input_ids=ids, use_cache=False)
        # recording hooks go on after the steering hooks, so they see the steered input
        with lm.steering(addition) as (vector,), recording_block_inputs(lm.blocks, layers) as steered:
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    start, t = int(prepend_bos), vector.positions
    for l in range(layer):
        assert torch.equal(steered[l], clean[l])
    expected = clean[layer].clone()
    expected[0, start : start + t] += addition.coeff * vector.vector
    assert torch.equal(steered[layer], expected)
    assert torch.equal(steered[layer][:, :start], clean[layer][:, :start])
    assert torch.equal(steered[layer][:, start + t :], clean[layer][:, start + t :])
    for l in range(layer + 1, N_LAYERS):
        assert not torch.allclose(steered[l], clean[l], atol=1e-4)


def test_front_alignment_from_the_attention_mask_of_a_left_padded_batch():
    lm = tiny_lm(prepend_bos=True)
    rows = [lm.encode(p).ids for p in (PROMPT, "Hi there")]
    ids, mask, pads = lm._left_pad(rows)
    assert pads[0] == 0 and pads[1] > 0
    with torch.inference_mode():
        with recording_block_inputs(lm.blocks, [1]) as clean:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        with lm.steering(LOVE) as (vector,), recording_block_inputs(lm.blocks, [1]) as steered:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    expected = clean[1].clone()
    for row, pad in enumerate(pads):
        start = pad + 1  # after the padding and the BOS
        expected[row, start : start + vector.positions] += vector.scaled()
    assert torch.equal(steered[1], expected)


# ------------------------------------------------------------------ batching
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_batched_per_row_logits_equal_each_row_alone(family, prepend_bos):
    lm, twin = tiny_lm(family, prepend_bos), tiny_model(family)
    prompts = [PROMPT, "Hi there", "The weather today is nice and", "When I think about weddings, I", "Anger is"]
    steer = [
        None,
        [ActAdd("Love", "Hate", layer=1, coeff=3.0)],
        [ActAdd("Happy people", "Sad", layer=2, coeff=-2.0), ActAdd("Love", "Hate", layer=0, coeff=1.5)],
        None,
        [ActAdd("Love", "Hate", layer=2, coeff=5.0)],
    ]
    batched = lm.next_token_logits(prompts, steer=steer)
    assert batched.shape == (5, len(lm.tokenizer)) and batched.dtype == torch.float32
    start = int(prepend_bos)
    for row, (prompt, entry) in enumerate(zip(prompts, steer)):
        alone = lm.next_token_logits([prompt], steer=[entry])[0]
        assert (batched[row] - alone).abs().max() <= 1e-4
        expected = ref.steered_logits(twin, lm.encode(prompt).ids, [ref_add(lm, twin, a, start) for a in entry or ()])[
            -1
        ]
        assert (alone - expected).abs().max() <= 1e-4
        if entry:
            assert (alone - lm.next_token_logits([prompt])[0]).abs().max() > 1e-2
    assert hook_count(lm.model) == 0


def test_shared_steer_forms_are_equivalent():
    lm = tiny_lm(prepend_bos=True)
    prompts = [PROMPT, "Hi there"]
    vector = lm.steering_vector(LOVE)
    forms = [LOVE, [LOVE], vector, [vector], [[LOVE], [vector]]]
    results = [lm.next_token_logits(prompts, steer=form) for form in forms]
    for other in results[1:]:
        assert torch.equal(results[0], other)
    assert torch.equal(lm.next_token_logits(prompts, steer=[]), lm.next_token_logits(prompts))


def test_several_additions_add_up():
    lm, twin = tiny_lm(prepend_bos=True), tiny_model()
    a1 = ActAdd("Love", "Hate", layer=1, coeff=2.0)
    a2 = ActAdd("Anger is a feeling", "Calm", layer=1, coeff=-1.5)
    v1, v2 = lm.steering_vector(a1), lm.steering_vector(a2)
    assert v1.positions != v2.positions
    summed = torch.zeros(max(v1.positions, v2.positions), v1.vector.shape[-1])
    summed[: v1.positions] += v1.scaled()
    summed[: v2.positions] += v2.scaled()
    one = SteeringVector(summed, layer=1, coeff=1.0)
    expected = lm.next_token_logits([PROMPT], steer=one)
    assert (lm.next_token_logits([PROMPT], steer=[a1, a2]) - expected).abs().max() <= 1e-5
    assert (lm.next_token_logits([PROMPT], steer=[[a1, a2]]) - expected).abs().max() <= 1e-5
    with lm.steering(a1, a2), torch.inference_mode():
        in_context = lm.model(input_ids=ids_of(lm, PROMPT)).logits[:, -1]
    assert (in_context - expected).abs().max() <= 1e-5
    # at different layers, both land: compare with the reference making both additions
    a3 = ActAdd("Happy people", "Sad", layer=2, coeff=-1.5)
    got = lm.next_token_logits([PROMPT], steer=[a1, a3])[0]
    want = ref.steered_logits(twin, lm.encode(PROMPT).ids, [ref_add(lm, twin, a1, 1), ref_add(lm, twin, a3, 1)])[-1]
    assert (got - want).abs().max() <= 1e-4


# ------------------------------------------------------------------ KV-cached decoding
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_greedy_generate_equals_a_no_cache_reference_loop(family, prepend_bos):
    lm, twin = tiny_lm(family, prepend_bos), tiny_model(family)
    addition = ActAdd("Love", "Hate", layer=1, coeff=6.0)
    prompt_ids = lm.encode(PROMPT).ids
    n = 12
    got = lm.complete([PROMPT], steer=addition, temperature=0, max_new_tokens=n)[0]
    want = ref.greedy(twin, prompt_ids, [ref_add(lm, twin, addition, int(prepend_bos))], n, lm.tokenizer.eos_token_id)
    assert list(got.token_ids) == want
    assert len(want) >= 4  # enough decode steps to see the cache at work
    plain = lm.complete([PROMPT], temperature=0, max_new_tokens=n)[0]
    assert list(plain.token_ids) == ref.greedy(twin, prompt_ids, [], n, lm.tokenizer.eos_token_id)
    assert plain.token_ids != got.token_ids  # the steering is strong enough to matter
    assert hook_count(lm.model) == 0


def _prefill_then_one_step(lm: SteerableLM, ids: torch.Tensor, addition: ActAdd, position: str):
    with torch.inference_mode():
        with lm.steering(addition, position=position):
            prefill = lm.model(input_ids=ids, use_cache=True)
            untouched_cache = copy.deepcopy(prefill.cache)
            token = prefill.logits[:, -1:].argmax(-1)
            steered_step = lm.model(input_ids=token, cache=prefill.cache, use_cache=True).logits[0, -1]
        plain_step = lm.model(input_ids=token, cache=untouched_cache, use_cache=True).logits[0, -1]
    return int(token), steered_step, plain_step


def test_a_single_decode_step_after_the_prefill_adds_nothing():
    lm, twin = tiny_lm(prepend_bos=True), tiny_model()
    ids = ids_of(lm, PROMPT)
    token, steered_step, plain_step = _prefill_then_one_step(lm, ids, LOVE, "front")
    assert torch.equal(steered_step, plain_step)
    # and the step still sees the steered prefill, through the cache
    want = ref.steered_logits(twin, ids[0].tolist() + [token], [ref_add(lm, twin, LOVE, 1)])[-1]
    assert (steered_step - want).abs().max() <= 1e-4
    unsteered = ref.steered_logits(twin, ids[0].tolist() + [token])[-1]
    assert (steered_step - unsteered).abs().max() > 1e-2
    assert hook_count(lm.model) == 0


def test_position_all_adds_at_decode_steps_too():
    lm, twin = tiny_lm(prepend_bos=True), tiny_model()
    ids = ids_of(lm, PROMPT)
    token, steered_step, plain_step = _prefill_then_one_step(lm, ids, LOVE, "all")
    assert (steered_step - plain_step).abs().max() > 1e-2
    # "all": the vector's mean over its positions goes to every position, decode steps included
    vector = ref.actadd_vector(twin, lm.tokenizer, "Love", "Hate", 1, True)
    everywhere = ref.Add(1, LOVE.coeff * vector.mean(dim=0), everywhere=True)
    want = ref.steered_logits(twin, ids[0].tolist() + [token], [everywhere])[-1]
    assert (steered_step - want).abs().max() <= 1e-4
    # and greedy generation through generate() agrees with the no-cache loop
    got = lm.complete([PROMPT], steer=LOVE, position="all", temperature=0, max_new_tokens=8)[0]
    assert list(got.token_ids) == ref.greedy(twin, ids[0].tolist(), [everywhere], 8, lm.tokenizer.eos_token_id)
    assert hook_count(lm.model) == 0


SAMPLING = {"temperature": 1.0, "top_p": 0.9, "freq_penalty": 0.5}


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_left_padded_batch_complete_equals_each_row_alone(prepend_bos):
    lm = tiny_lm(prepend_bos=prepend_bos)
    prompts = [PROMPT, "Hi there", "The weather today is nice and", PROMPT, "Anger is"]
    seeds = [11, 5, 11, 11, 42]
    steer = [
        None,
        [ActAdd("Love", "Hate", layer=1, coeff=4.0)],
        [ActAdd("Happy people", "Sad", layer=2, coeff=-2.0), ActAdd("Love", "Hate", layer=0, coeff=1.5)],
        [ActAdd("Love", "Hate", layer=1, coeff=4.0)],
        None,
    ]
    batched = lm.complete(prompts, seeds=seeds, steer=steer, max_new_tokens=12, **SAMPLING)
    assert [c.seed for c in batched] == seeds
    for row, (prompt, seed, entry) in enumerate(zip(prompts, seeds, steer)):
        alone = lm.complete([prompt], seeds=[seed], steer=[entry], max_new_tokens=12, **SAMPLING)[0]
        assert batched[row].token_ids == alone.token_ids, f"row {row}"
        assert batched[row].prompt_ids == lm.encode(prompt).ids
        assert batched[row].text == lm.tokenizer.decode(list(alone.token_ids), skip_special_tokens=True)
    # same prompt and seed, steered vs not: common random numbers, different outcome
    assert batched[0].token_ids != batched[3].token_ids
    # smaller batches give the same rows
    chunked = lm.complete(prompts, seeds=seeds, steer=steer, max_new_tokens=12, batch_size=2, **SAMPLING)
    assert [c.token_ids for c in chunked] == [c.token_ids for c in batched]
    assert hook_count(lm.model) == 0


def test_default_seeds_are_seed_plus_row_and_progress_is_reported():
    lm = tiny_lm()
    calls = []
    out = lm.complete(
        ["Hi", "Hi", "Hi"], seed=7, max_new_tokens=3, batch_size=2, progress=lambda d, t: calls.append((d, t))
    )
    assert [c.seed for c in out] == [7, 8, 9]
    assert calls == [(2, 3), (3, 3)]
    assert lm.generate(["Hi", "Hi", "Hi"], seed=7, max_new_tokens=3) == [c.text for c in out]


# ------------------------------------------------------------------ save / load
def test_steering_vector_save_load_round_trip(tmp_path):
    lm = tiny_lm(prepend_bos=True)
    vector = lm.steering_vector(ActAdd("Liebe ❤", "Hate", layer=2, coeff=1.0)).with_coeff(2.5)
    path = vector.save(tmp_path / "nested" / "love.safetensors")
    loaded = SteeringVector.load(path)
    assert torch.equal(loaded.vector, vector.vector) and loaded.vector.dtype == vector.vector.dtype
    for name in ("layer", "coeff", "prompt_add", "prompt_sub", "pad_token", "add_ids", "sub_ids", "provenance"):
        assert getattr(loaded, name) == getattr(vector, name), name
    assert loaded.coeff == 2.5 and loaded.prompt_add == "Liebe ❤"
    long_prompt = "When I think about weddings, I think about flowers."
    assert torch.equal(
        lm.next_token_logits([long_prompt], steer=loaded), lm.next_token_logits([long_prompt], steer=vector)
    )
    # provenance is readable without torch: it is the safetensors JSON header
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])["__metadata__"]
    assert header["format"] == "actadd-notes/steering-vector/v1" and header["layer"] == "2"


def test_loading_a_foreign_safetensors_file_fails_clearly(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"vector": torch.zeros(2, 32)}, str(path))
    with pytest.raises(SteeringError, match="not an actadd-notes steering vector"):
        SteeringVector.load(path)


# ------------------------------------------------------------------ chat
def test_chat_start_points_at_the_users_first_token():
    lm, twin = tiny_lm(prepend_bos=True), tiny_model()
    prompt = "I hate you because"
    encoded = lm.encode(prompt, chat=True)
    user_ids = lm.tokenizer.encode(prompt, add_special_tokens=False)
    assert encoded.ids[encoded.start : encoded.start + len(user_ids)] == tuple(user_ids)
    before = lm.tokenizer.decode(list(encoded.ids[: encoded.start]))
    assert SYSTEM_PROMPT in before and before.endswith("<|user|>")
    assert encoded.ids[0] == lm.tokenizer.bos_token_id  # from the template, not added twice
    assert encoded.ids.count(lm.tokenizer.bos_token_id) == 1
    # steering in chat mode lands on the user's message
    got = lm.next_token_logits([prompt], chat=True, steer=LOVE)[0]
    want = ref.steered_logits(twin, encoded.ids, [ref_add(lm, twin, LOVE, encoded.start)])[-1]
    assert (got - want).abs().max() <= 1e-4


def test_chat_without_a_template_is_refused():
    lm = tiny_lm()
    lm.tokenizer.chat_template = None
    with pytest.raises(SteeringError, match="no chat template"):
        lm.encode("Hi", chat=True)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("field", ["prompt_add", "prompt_sub"])
def test_empty_prompts_are_refused(field):
    kwargs = {"prompt_add": "Love", "prompt_sub": "Hate", "layer": 1, field: ""}
    with pytest.raises(SteeringError, match=f"{field}: empty prompt"):
        ActAdd(**kwargs)
    lm = tiny_lm()
    for empty in ("", "   "):
        with pytest.raises(SteeringError, match="empty prompt"):
            lm.next_token_logits([PROMPT, empty])
        with pytest.raises(SteeringError, match="empty prompt"):
            lm.complete([empty])


@pytest.mark.parametrize("coeff", [math.nan, math.inf, -math.inf])
def test_non_finite_coefficients_are_refused(coeff):
    with pytest.raises(SteeringError, match="finite"):
        ActAdd("Love", "Hate", layer=1, coeff=coeff)
    vector = tiny_lm().steering_vector(LOVE)
    with pytest.raises(SteeringError, match="finite"):
        vector.with_coeff(coeff)


def test_malformed_actadds_are_refused():
    with pytest.raises(SteeringError, match="layer"):
        ActAdd("Love", "Hate", layer=-1)
    with pytest.raises(SteeringError, match="layer"):
        ActAdd("Love", "Hate", layer=True)
    with pytest.raises(SteeringError, match="coeff"):
        ActAdd("Love", "Hate", layer=1, coeff="4")
    with pytest.raises(SteeringError, match="pad_token"):
        ActAdd("Love", "Hate", layer=1, pad_token="")


def test_layer_out_of_range_names_the_range():
    lm = tiny_lm()
    for layer in (N_LAYERS, 40):
        with pytest.raises(SteeringError, match=f"layer {layer}: tiny-llama has layers 0–{N_LAYERS - 1}"):
            lm.steering_vector(ActAdd("Love", "Hate", layer=layer))
        with pytest.raises(SteeringError, match=f"layers 0–{N_LAYERS - 1}"):
            lm.complete([PROMPT], steer=ActAdd("Love", "Hate", layer=layer), max_new_tokens=1)
    assert hook_count(lm.model) == 0


def test_per_row_lists_of_the_wrong_length_are_refused():
    lm = tiny_lm()
    with pytest.raises(SteeringError, match="3 per-row entries for 2 prompts"):
        lm.next_token_logits([PROMPT, "Hi"], steer=[None, [LOVE], None])
    with pytest.raises(SteeringError, match="1 per-row entries for 2 prompts"):
        lm.complete([PROMPT, "Hi"], steer=[None], max_new_tokens=1)
    with pytest.raises(SteeringError, match=r"steer\[1\].*wrap it in a list"):
        lm.next_token_logits([PROMPT, "Hi"], steer=[None, LOVE])
    with pytest.raises(SteeringError, match="2 seeds for 3 prompts"):
        lm.complete([PROMPT, "Hi", "Hi"], seeds=[1, 2], max_new_tokens=1)
    with pytest.raises(SteeringError, match="max_new_tokens"):
        lm.complete([PROMPT], max_new_tokens=0)
    assert hook_count(lm.model) == 0


def test_a_prompt_shorter_than_the_vector_is_refused():
    lm = tiny_lm(prepend_bos=True)
    long = ActAdd("Love and peace, not hate and war.", "Hate", layer=1)
    vector = lm.steering_vector(long)
    short = lm.encode("Hi")
    assert len(short.ids) - short.start < vector.positions
    with pytest.raises(
        SteeringError, match=rf"row 0: the prompt has {len(short.ids) - 1} token\(s\).*covers {vector.positions}"
    ):
        lm.next_token_logits(["Hi"], steer=long)
    # in a batch, the short row is named
    with pytest.raises(SteeringError, match="row 1: the prompt has"):
        lm.next_token_logits([PROMPT, "Hi"], steer=[None, [long]])
    with pytest.raises(SteeringError, match="covers"), lm.steering(long), torch.inference_mode():
        lm.model(input_ids=ids_of(lm, "Hi"))
    assert hook_count(lm.model) == 0


def test_a_pad_token_of_several_tokens_is_refused():
    lm = tiny_lm()
    assert len(lm.tokenizer.encode("xq zv", add_special_tokens=False)) > 1
    with pytest.raises(SteeringError, match="pad_token 'xq zv' is .* tokens for tiny-llama; it must be exactly one"):
        lm.steering_vector(ActAdd("Love", "Hate", layer=1, pad_token="xq zv"))


def test_a_vector_of_the_wrong_width_is_refused():
    lm = tiny_lm()
    with pytest.raises(SteeringError, match="width 16 does not match"):
        lm.next_token_logits([PROMPT], steer=SteeringVector(torch.zeros(2, 16), layer=1))
    with pytest.raises(SteeringError, match="cannot steer with str"), lm.steering("Love"):
        pass


def test_position_must_be_front_or_all():
    lm = tiny_lm()
    with pytest.raises(SteeringError, match="position: 'middle'"):
        lm.next_token_logits([PROMPT], steer=LOVE, position="middle")


def test_an_architecture_without_known_blocks_needs_block_path():
    model, twin = tiny_mpt(), tiny_mpt()
    with pytest.raises(ModelError, match="cannot find the decoder blocks of MptForCausalLM.*block_path="):
        SteerableLM(model, tiny_tokenizer())
    with pytest.raises(ModelError, match="no list of decoder blocks at 'transformer.wte'"):
        find_blocks(model, "transformer.wte")
    lm = SteerableLM(model, tiny_tokenizer(), block_path="transformer.blocks", prepend_bos=True)
    assert lm.block_path == "transformer.blocks" and lm.num_layers == N_LAYERS
    vector = lm.steering_vector(LOVE)
    assert (vector.vector - ref.actadd_vector(twin, lm.tokenizer, "Love", "Hate", 1, True)).abs().max() <= 1e-5
    got = lm.next_token_logits([PROMPT], steer=LOVE)[0]
    want = ref.steered_logits(
        twin, lm.encode(PROMPT).ids, [ref.Add(1, LOVE.coeff * vector.vector, 1)], blocks=twin.transformer.blocks
    )[-1]
    assert (got - want).abs().max() <= 1e-4
    assert (got - lm.next_token_logits([PROMPT])[0]).abs().max() > 1e-2
    assert hook_count(lm.model) == 0


# ------------------------------------------------------------------ loading
def test_loading_an_unknown_hub_id_offline_gives_a_hint():
    with pytest.raises(ModelError, match=r"'no/such-model' is not a local path.*hf download no/such-model") as caught:
        load_model("no/such-model", device="cpu")
    assert caught.value.__cause__ is not None


def test_loading_a_nonexistent_local_path_fails_clearly(tmp_path):
    missing = tmp_path / "missing-model"
    with pytest.raises(ModelError, match=f"model '{missing}'"):
        load_model(str(missing), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="cannot load from this path"):
        load_model(str(empty), device="cpu")


def test_loading_a_saved_tiny_model_from_a_local_path(tmp_path):
    tiny_model().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    lm = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32", prepend_bos=True)
    pristine = tiny_lm(prepend_bos=True)
    assert lm.num_layers == N_LAYERS and lm.dtype == torch.float32
    for name, tensor in pristine.model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[name], tensor), name
    # same weights; memory layout after loading may change float rounding in the last bit
    got, want = lm.next_token_logits([PROMPT], steer=LOVE), pristine.next_token_logits([PROMPT], steer=LOVE)
    assert (got - want).abs().max() <= 1e-5


# --- memory-aware batching -----------------------------------------------------------------


def _memory_limit(model: torch.nn.Module, max_rows: int):
    """A forward pre-hook that fails like a full GPU when a batch has more than `max_rows` rows."""

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > max_rows:
            raise torch.OutOfMemoryError(f"simulated: {ids.shape[0]} rows > {max_rows}")

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def test_out_of_memory_halves_the_batch_and_gives_the_same_results():
    lm = tiny_lm("llama")
    prompts = ["one two three", "four five", "six seven eight nine", "ten", "eleven twelve", "thirteen"]
    steer = [[ActAdd("one", "two", 1, 3.0)], None, None, [ActAdd("one", "two", 2, 1.0)], None, None]
    wanted = lm.complete(prompts, max_new_tokens=5, steer=steer, batch_size=6)
    wanted_ppl = lm.perplexities(wanted, batch_size=6)
    handle = _memory_limit(lm.model, max_rows=2)
    try:
        got = lm.complete(prompts, max_new_tokens=5, steer=steer, batch_size=6)
        got_ppl = lm.perplexities(got, batch_size=6)
    finally:
        handle.remove()
    assert [c.token_ids for c in got] == [c.token_ids for c in wanted]
    assert got_ppl == pytest.approx(wanted_ppl, rel=1e-5)


def test_batched_perplexities_equal_each_rows_own_in_float64():
    """One left-padded batch of rows of different lengths (one empty) scores each row as the model does
    alone: exp of the mean negative log-likelihood of its own tokens given its prompt."""
    from actadd_notes.steering.lm import Completion

    lm = tiny_lm("llama")
    prompts = ["one two three four five", "six", "seven eight", "nine ten eleven"]
    completions = lm.complete(prompts, max_new_tokens=6, seed=3)
    completions.append(Completion("twelve", "", lm.encode("twelve").ids, (), 0))
    got = lm.perplexities(completions, batch_size=8)
    model64 = copy.deepcopy(lm.model).double()
    for completion, value in zip(completions, got):
        if not completion.token_ids:
            assert math.isnan(value)
            continue
        ids = torch.tensor([completion.prompt_ids + completion.token_ids])
        with torch.inference_mode():
            logprobs = torch.log_softmax(model64(input_ids=ids).logits[0, :-1], dim=-1)
        n = len(completion.token_ids)
        own = logprobs[-n:].gather(-1, ids[0, -n:, None]).mean()
        assert value == pytest.approx(float(torch.exp(-own)), rel=1e-4)


def test_out_of_memory_at_batch_size_one_is_a_model_error():
    lm = tiny_lm("llama")
    handle = _memory_limit(lm.model, max_rows=0)
    try:
        with pytest.raises(ModelError, match="out of memory even with batch size 1"):
            lm.complete(["one two"], max_new_tokens=2)
    finally:
        handle.remove()
