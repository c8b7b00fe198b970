"""The degeneration guard (issue 21): loops and special or added tokens, which perplexity cannot see.

The scores are checked on known token sequences, the guard's decision on constructed scores, and the
whole pipeline on a tiny real model whose unembedding row of one token points along the residual
stream that steering at the last layer produces: steered, it emits that token (an added token like
Gemma's `<start_of_image>`, or an ordinary word it then repeats), and the guard must reject it.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from tiny import tiny_model, tiny_threads, tiny_tokenizer

from actadd_notes.experiments.artifacts import SETTINGS, render_artifacts
from actadd_notes.experiments.degeneration import (
    REPETITION,
    SPECIAL_TOKENS,
    flagged_text,
    non_text_ids,
    repetition,
    special_token_rate,
)
from actadd_notes.experiments.evaluator import summarise_setting
from actadd_notes.experiments.metrics import PERPLEXITY
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import SEARCH, Setting
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.steering.lm import SteerableLM

IMAGE = "<start_of_image>"


# ------------------------------------------------------------------ the scores
@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], 0.0),
        ([5, 5], 0.0),  # shorter than one 3-gram and a repeat: nothing to repeat
        ([1, 2, 3, 4, 5, 6], 0.0),
        ([1, 2, 3, 1, 2, 3, 1, 2, 3], 4 / 7),  # 7 trigrams, the last 4 seen before
        ([7, 7, 7, 7, 7], 2 / 3),  # (7,7,7) three times: two repeats
        ([1, 2, 1, 2, 3, 4], 0.0),  # a repeated pair is not a repeated trigram
    ],
)
def test_repetition_is_the_share_of_trigrams_that_repeat_an_earlier_one(ids, expected):
    assert repetition(ids) == pytest.approx(expected)


def test_special_and_added_tokens_count_but_whitespace_added_tokens_do_not():
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([IMAGE, "   "])
    image, spaces = tokenizer.convert_tokens_to_ids([IMAGE, "   "])
    non_text = non_text_ids(tokenizer)
    assert {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, image} <= non_text
    assert spaces not in non_text
    words = tokenizer.encode("I love you", add_special_tokens=False)
    assert not non_text & set(words)
    assert special_token_rate(words, non_text) == 0.0
    assert special_token_rate([*words, image, tokenizer.bos_token_id], non_text) == pytest.approx(2 / (len(words) + 2))
    assert special_token_rate([], non_text) == 0.0


def test_completions_flag_special_and_added_tokens_visibly():
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([IMAGE])
    image = tokenizer.convert_tokens_to_ids(IMAGE)
    non_text = non_text_ids(tokenizer)
    words = tokenizer.encode("I love you", add_special_tokens=False)
    assert flagged_text(words, tokenizer, non_text) is None  # nothing to flag: the decoded text is shown as it is
    ids = [*words, image, tokenizer.bos_token_id, *words]
    # decoded as usual, the special <bos> vanishes and the added token looks like markup
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"I love you{IMAGE}I love you"
    assert flagged_text(ids, tokenizer, non_text) == f"I love you⟦{IMAGE}⟧⟦<bos>⟧I love you"


# ------------------------------------------------------------------ the guard's decision
def _scores(perplexity: float, repeated: float, special: float) -> dict[str, tuple[list[float], list[int]]]:
    spread = [-0.01, 0.0, 0.01]
    return {
        PERPLEXITY: ([perplexity + d for d in spread], [0, 0, 0]),
        REPETITION: ([repeated + d for d in spread], [0, 0, 0]),
        SPECIAL_TOKENS: ([special + d for d in spread], [0, 0, 0]),
    }


@pytest.mark.parametrize(
    ("steered", "reasons"),
    [
        ((10.0, 0.10, 0.0), ()),
        ((10.0, 0.29, 0.009), ()),  # just inside both limits
        ((9.0, 0.61, 0.0), ("repetition",)),  # a loop lowers perplexity: the ratio alone would pass it
        ((10.0, 0.10, 0.05), ("special tokens",)),
        ((20.0, 0.10, 0.0), ("perplexity",)),
        ((20.0, 0.80, 0.30), ("perplexity", "repetition", "special tokens")),
    ],
)
def test_the_guard_rejects_loops_and_special_tokens_relative_to_the_baseline(steered, reasons):
    baseline = _scores(10.0, 0.10, 0.0)
    result = summarise_setting(
        Setting(4, 8.0),
        _scores(*steered),
        baseline,
        1.5,
        max_repetition_increase=0.2,
        max_special_token_increase=0.01,
    )
    assert result.rejected_for == reasons
    assert result.rejected is bool(reasons)
    assert result.to_dict()["rejected_for"] == list(reasons)


def test_the_baseline_is_never_rejected():
    result = summarise_setting(Setting(), _scores(10.0, 0.9, 0.5), None, 1.5, max_repetition_increase=0.0)
    assert not result.rejected and result.rejected_for == ()


# ------------------------------------------------------------------ end to end
def _driven_lm(token: str, *, added: bool, scale: float) -> SteerableLM:
    """A tiny llama whose unembedding row of `token` points along the last layer's input at that
    token: steering with p+ = `token` there, at every position, makes it the likeliest next token."""
    tokenizer = tiny_tokenizer()
    if added:
        tokenizer.add_tokens([token])
    ids = tokenizer.encode(token, add_special_tokens=False)
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        residual = model(torch.tensor([[tokenizer.bos_token_id, *ids]]), output_hidden_states=True).hidden_states
        last_input = residual[model.config.num_hidden_layers - 1][0, -1]
        model.lm_head.weight[ids[-1]] = scale * last_input / last_input.norm()
    return SteerableLM(model, tokenizer, name="tiny-llama-driven")


def _run(lm: SteerableLM, token: str, **overrides):
    spec, warnings = parse_spec(
        {
            "prompt_add": token,
            "prompt_sub": "Hate",
            "layer": 2,
            "coeff": [0, 20],
            "position": "all",
            "prompts": ["I hate you because", "The weather today is nice and"],
            "samples": 3,
            "max_new_tokens": 8,
            "metrics": ["sentiment"],
            "max_perplexity_ratio": 1000,  # the perplexity guard alone passes everything
            "confirm": False,
            **overrides,
        }
    )
    assert warnings == []
    return run_experiment(spec, lm)


@pytest.mark.parametrize(
    ("token", "added", "overrides", "reason", "words"),
    [
        (IMAGE, True, {}, "special tokens", "emits special tokens"),
        ("Love", False, {"freq_penalty": 0}, "repetition", "loops (repetition"),
    ],
)
def test_a_setting_steered_into_a_token_or_a_loop_is_rejected_with_its_reason(token, added, overrides, reason, words):
    result = _run(_driven_lm(token, added=added, scale=4.0 if reason == "repetition" else 2.0), token, **overrides)
    unsteered, steered = result.settings
    assert unsteered.setting == Setting(2, 0.0) and not unsteered.rejected
    assert steered.rejected and reason in steered.rejected_for
    assert steered.perplexity_ratio <= 1000
    assert result.best is unsteered  # the degenerate setting cannot win
    line = next(line for line in result.findings if "failed the fluency guard" in line)
    assert line.startswith("1 of 2 settings failed the fluency guard") and f"L2 c20 {words}" in line

    files = render_artifacts(result)
    saved = {s["label"]: s for s in json.loads(files["results.json"])["settings"]}
    assert reason in saved["L2 c20"]["rejected_for"] and saved["L2 c0"]["rejected_for"] == []
    rows = [r for r in csv.DictReader(io.StringIO(files[SETTINGS].decode())) if r["setting"] == "L2 c20"]
    assert rows and all(reason in r["rejected_for"].split("; ") for r in rows)


def test_example_completions_show_the_added_token_the_decoded_text_hides_as_markup():
    result = _run(_driven_lm(IMAGE, added=True, scale=2.0), IMAGE)
    steered = result.settings[-1].setting
    examples = [row["completion"] for row in result.examples(SEARCH, steered)]
    assert any(f"⟦{IMAGE}⟧" in text for text in examples)
    raw = [s.completion.text for s in result.samples if s.setting == steered]
    assert any(IMAGE in text for text in raw)  # unflagged, skip_special_tokens keeps it as if it were text
