"""The whole pipeline on a randomly initialised model with a real tokenizer (the embedded
SmolLM2's): weights that know nothing about sentiment must never yield `effect: detected`.

Such a tiny model is quiet (measured while planning: the old rule gave no false positive in 9
runs), so this checks that the pipeline wires search, confirmation, control and verdict
together; the statistics' calibration is tests/test_verdict.py's job, on thousands of
simulated null grids."""

from __future__ import annotations

import pytest
import torch
from tiny import one_torch_thread

from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import DETECTED
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.steering.lm import SteerableLM

pytestmark = pytest.mark.embedded  # the tokenizer comes from the embedded model (converted once per session)


@pytest.fixture(scope="module")
def random_lm():
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from actadd_notes.steering.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir(), trust_remote_code=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return SteerableLM(model, tokenizer, name="random-llama-64")


@pytest.mark.parametrize("seed", range(4))
def test_a_model_that_knows_nothing_never_reports_an_effect(random_lm, seed):
    spec, _ = parse_spec({
        "prompt_add": "Love", "prompt_sub": "Hate", "layer": [1, 3], "coeff": [2, 16],
        "prompts": ["I hate you because"], "samples": 8, "max_new_tokens": 12, "seed": seed,
        "metrics": ["sentiment"], "max_perplexity_ratio": 1000,
    })  # fmt: skip
    with one_torch_thread():
        result = run_experiment(spec, random_lm)
    assert result.confirmation is not None and result.confirmation.control.setting.control
    assert result.effect != DETECTED, result.findings
    assert result.findings[0] == result.verdict.sentence
