"""Every supported family: blocks found, the vector matches the reference, steering lands where
the reference puts it (also left-padded in a batch, and through KV-cached greedy decoding), and
no hook is left behind."""

from __future__ import annotations

import pytest
import reference_actadd as ref
import torch
from tiny import (
    BLOCK_PATH,
    FAMILIES,
    N_LAYERS,
    hook_count,
    tiny_lm,
    tiny_model,
    tiny_threads,
)

from actadd_notes.steering import ActAdd, find_blocks

PROMPT = "I hate you because you are mean."
LOVE = ActAdd("Love", "Hate", layer=1, coeff=5.0)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_the_family_builds_and_its_blocks_are_found(family):
    model = tiny_model(family)
    path, blocks = find_blocks(model)
    assert path == BLOCK_PATH[family]
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == N_LAYERS
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert hook_count(model) == 0


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_steering_matches_the_reference(family, prepend_bos):
    lm, twin = tiny_lm(family, prepend_bos), tiny_model(family)
    start = int(prepend_bos)
    vector = lm.steering_vector(LOVE)
    expected = ref.actadd_vector(twin, lm.tokenizer, "Love", "Hate", LOVE.layer, prepend_bos)
    assert (vector.vector - expected).abs().max() <= 1e-5

    ids = lm.encode(PROMPT).ids
    plain = lm.next_token_logits([PROMPT])[0]
    steered = lm.next_token_logits([PROMPT], steer=LOVE)[0]
    assert (steered - plain).abs().max() > 1e-2
    want = ref.steered_logits(twin, ids, [ref.Add(LOVE.layer, LOVE.coeff * expected, start)])[-1]
    assert (steered - want).abs().max() <= 1e-4
    assert (plain - ref.steered_logits(twin, ids)[-1]).abs().max() <= 1e-4
    assert hook_count(lm.model) == 0


def test_left_padded_rows_equal_rows_alone(family):
    lm = tiny_lm(family, prepend_bos=True)
    prompts = [PROMPT, "Hi there", "Anger is"]
    steer = [[LOVE], None, [ActAdd("Happy people", "Sad", layer=2, coeff=-3.0)]]
    batched = lm.next_token_logits(prompts, steer=steer)
    for row, (prompt, entry) in enumerate(zip(prompts, steer)):
        assert (batched[row] - lm.next_token_logits([prompt], steer=[entry])[0]).abs().max() <= 1e-4
    assert hook_count(lm.model) == 0


def test_cached_greedy_decoding_matches_the_reference(family):
    lm, twin = tiny_lm(family, prepend_bos=True), tiny_model(family)
    expected = ref.actadd_vector(twin, lm.tokenizer, "Love", "Hate", LOVE.layer, True)
    got = lm.complete([PROMPT], steer=LOVE, temperature=0, max_new_tokens=6)[0]
    want = ref.greedy(
        twin, lm.encode(PROMPT).ids, [ref.Add(LOVE.layer, LOVE.coeff * expected, 1)], 6, lm.tokenizer.eos_token_id
    )
    assert list(got.token_ids) == want
    assert hook_count(lm.model) == 0
