"""The spec layer: parsing the README example, every refusal message, warnings, hashing, work limits."""

from __future__ import annotations

import json
import math

import pytest
from ruamel.yaml import YAML

from actadd_notes.errors import SpecError
from actadd_notes.experiments.spec import (
    TOOL_KEYS,
    ExperimentSpec,
    ExtraAddition,
    WorkEstimate,
    check_layers,
    check_work,
    estimate_work,
    parse_spec,
)

EXAMPLE = """\
type: actadd-experiment
status: queued
model: embedded
prompt_add: Love
prompt_sub: Hate
layer: [2, 4, 6, 8, 10]
coeff: [1, 2, 4, 8]
prompts:
  - I hate you because
  - I went up to my friend and said
samples: 20
max_new_tokens: 30
seed: 0
temperature: 1.0
top_p: 0.3
freq_penalty: 1.0
metrics: [sentiment, fluency]
literature: ["[[@turnerActivationAdditionSteering2024]]"]
"""


def load(text: str = EXAMPLE) -> dict:
    return YAML(typ="safe", pure=True).load(text)


def parse(body: str = "", **changes) -> tuple[ExperimentSpec, list[str]]:
    """The example with `changes`; a change to None removes the key."""
    props = load()
    props.update(changes)
    return parse_spec({k: v for k, v in props.items() if v is not None}, body)


def refusal(body: str = "", **changes) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse(body, **changes)
    return caught.value


def test_example_parses_to_typed_fields():
    spec, warnings = parse_spec(load())
    assert warnings == []
    assert spec.model == "embedded"
    assert (spec.prompt_add, spec.prompt_sub) == ("Love", "Hate")
    assert spec.layers == (2, 4, 6, 8, 10)
    assert spec.coeffs == (1.0, 2.0, 4.0, 8.0) and all(type(c) is float for c in spec.coeffs)
    assert spec.prompts == ("I hate you because", "I went up to my friend and said")
    assert (spec.samples, spec.max_new_tokens, spec.seed) == (20, 30, 0)
    assert (spec.temperature, spec.top_p, spec.top_k, spec.freq_penalty) == (1.0, 0.3, 0, 1.0)
    assert spec.metrics == ("sentiment", "fluency")
    assert (spec.search, spec.objective, spec.direction, spec.max_perplexity_ratio) == (
        "grid",
        "sentiment",
        "maximize",
        1.5,
    )
    assert (spec.layer_range, spec.coeff_range, spec.trials) == (None, None, None)
    assert (spec.chat, spec.pad_token, spec.position, spec.batch_size) == (False, " ", "front", None)
    assert spec.max_generations == 20_000
    assert spec.extra_additions == () and spec.classifier == {}
    assert spec.literature == ("[[@turnerActivationAdditionSteering2024]]",)
    assert spec.unknown == {"type": "actadd-experiment"}


def test_a_space_for_p_minus_subtracts_the_padding_alone():
    spec, _ = parse(prompt_sub=" ")
    assert spec.prompt_sub == " "


def test_single_values_count_as_lists():
    spec, _ = parse(layer=6, coeff=-4, prompts="Once upon a time", metrics="profanity")
    assert (spec.layers, spec.coeffs, spec.prompts) == ((6,), (-4.0,), ("Once upon a time",))
    assert spec.metrics == ("profanity", "fluency")


def test_empty_properties_count_as_absent():
    props = load() | {"samples": None, "top_k": None, "batch_size": None}
    spec, _ = parse_spec(props)
    assert (spec.samples, spec.top_k, spec.batch_size) == (10, 0, None)


GREEDY = "must be ≥ 0.001 — for the likeliest token every time, use top_k: 1"


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"samples": "ten"}, "samples", "samples: 'ten' is not a whole number ≥ 1"),
        ({"samples": 0}, "samples", "samples: 0 is not a whole number ≥ 1"),
        ({"samples": True}, "samples", "samples: true is not a whole number ≥ 1"),
        (
            {"samples": "10"},
            "samples",
            "samples: '10' is not a whole number ≥ 1 (it is quoted: write it without quotes)",
        ),
        ({"max_new_tokens": 2.5}, "max_new_tokens", "max_new_tokens: 2.5 is not a whole number ≥ 1"),
        ({"seed": -1}, "seed", "seed: -1 is not a whole number ≥ 0"),
        ({"top_k": 1.5}, "top_k", "top_k: 1.5 is not a whole number ≥ 0"),
        ({"batch_size": 0}, "batch_size", "batch_size: 0 is not a whole number ≥ 1"),
        ({"max_generations": 0}, "max_generations", "max_generations: 0 is not a whole number ≥ 1"),
        ({"top_p": 1.5}, "top_p", "top_p: 1.5 must be in (0, 1]"),
        ({"top_p": 0}, "top_p", "top_p: 0 must be in (0, 1]"),
        ({"temperature": 0}, "temperature", f"temperature: 0 {GREEDY}"),
        ({"temperature": 1e-300}, "temperature", f"temperature: 1e-300 {GREEDY}"),  # overflowed to empty text
        ({"temperature": True}, "temperature", "temperature: true is not a number"),
        ({"freq_penalty": -1}, "freq_penalty", "freq_penalty: -1 must be ≥ 0"),
        ({"max_perplexity_ratio": 0.5}, "max_perplexity_ratio", "max_perplexity_ratio: 0.5 must be ≥ 1"),
        (
            {"max_perplexity_ratio": math.inf},
            "max_perplexity_ratio",
            "max_perplexity_ratio: inf must be a finite number",
        ),
        ({"coeff": math.nan}, "coeff", "coeff: nan must be a finite number"),
        ({"coeff": [1, "two"]}, "coeff", "coeff: 'two' is not a number"),
        ({"coeff": [True]}, "coeff", "coeff: true is not a number"),
        ({"coeff": []}, "coeff", "coeff: empty list — give at least one value"),
        ({"coeff": [2, 2.0]}, "coeff", "coeff: 2.0 is listed twice"),
        ({"layer": 2.5}, "layer", "layer: 2.5 is not a whole number ≥ 0"),
        ({"layer": [2, -1]}, "layer", "layer: -1 is not a whole number ≥ 0"),
        ({"layer": [True]}, "layer", "layer: true is not a whole number ≥ 0"),
        ({"layer": [4, 4]}, "layer", "layer: 4 is listed twice"),
        (
            {"layer": {"min": 2, "max": 6}},
            "layer",
            "layer: {'min': 2, 'max': 6} is a range — ranges need search: bayes; list the values for a grid",
        ),
        ({"search": "random"}, "search", "search: 'random' — expected grid or bayes"),
        ({"direction": "up"}, "direction", "direction: 'up' — expected maximize or minimize"),
        ({"position": "middle"}, "position", "position: 'middle' — expected front or all"),
        ({"chat": "yes"}, "chat", "chat: 'yes' — expected true or false"),
        ({"model": 3}, "model", "model: 3 must be a string"),
        ({"model": ""}, "model", "model: is empty — give a non-empty string"),
        ({"pad_token": ""}, "pad_token", "pad_token: is empty — give a non-empty string"),
        ({"prompt_add": ""}, "prompt_add", "prompt_add: empty prompt"),
        ({"prompt_add": "   "}, "prompt_add", "prompt_add: empty prompt"),
        ({"prompt_add": 5}, "prompt_add", "prompt_add: 5 must be a string — quote it"),
        ({"prompt_add": None}, "prompt_add", "prompt_add: missing — give the text whose activations are added"),
        (
            {"prompt_sub": ""},  # the engine has no empty prompt: the pad token alone is written out
            "prompt_sub",
            "prompt_sub: is empty — give a non-empty string; for the padding alone write one space, "
            'prompt_sub: " " (the pad token)',
        ),
        (
            {"prompt_sub": None},
            "prompt_sub",
            'prompt_sub: missing — give the text whose activations are subtracted (" " for padding alone)',
        ),
        ({"layer": None}, "layer", "layer: missing — give a layer number or a list such as [2, 4, 6]"),
        ({"coeff": None}, "coeff", "coeff: missing — give a number or a list such as [1, 2, 4]"),
        ({"prompts": None}, "prompts", 'prompts: no prompts — give a prompts list or a "## Prompts" section'),
        ({"prompts": []}, "prompts", 'prompts: no prompts — give a prompts list or a "## Prompts" section'),
        ({"prompts": ["ok", ""]}, "prompts", "prompts: item 2: empty prompt"),
        ({"prompts": [42]}, "prompts", "prompts: item 1 42 must be a string — quote it"),
        (
            {"metrics": ["sentimnet"]},
            "metrics",
            "metrics: 'sentimnet' — expected one of sentiment, profanity, toxicity, relevance, topic_rate, fluency, kl",
        ),
        ({"metrics": ["kl", "kl"]}, "metrics", "metrics: 'kl' is listed twice"),
        (
            {"objective": "profanity"},
            "objective",
            "objective: 'profanity' — expected sentiment or fluency (add it to metrics)",
        ),
        (
            {"extra_additions": [{"add": "Calm"}]},
            "extra_additions",
            "extra_additions: item 1: {'add': 'Calm'} — expected {add: …, sub: …, layer: …, coeff: …}",
        ),
        (
            {"extra_additions": [{"add": "Calm", "sub": "", "layer": 2.5, "coeff": 1}]},
            "extra_additions",
            "extra_additions: item 1: layer: 2.5 is not a whole number ≥ 0",
        ),
        (
            {"literature": [["@turner"]]},
            "literature",
            "literature: item 1 ['@turner'] must be a string — quote wiki links: \"[[@key]]\"",
        ),
        (
            {"classifier": 3},
            "classifier",
            "classifier: 3 — expected a model id or path, or {sentiment: …, toxicity: …}",
        ),
    ],
)
def test_refusals_name_key_value_and_what_is_valid(changes, key, message):
    error = refusal(**changes)
    assert error.key == key
    assert str(error) == message


def test_refusal_names_the_note():
    with pytest.raises(SpecError) as caught:
        parse_spec(load() | {"samples": "ten"}, note="Experiments/love.md")
    assert caught.value.note == "Experiments/love.md"
    assert str(caught.value) == "Experiments/love.md: samples: 'ten' is not a whole number ≥ 1"


def test_unknown_keys_are_kept_and_warned_tool_keys_ignored():
    assert {
        "status",
        "started",
        "finished",
        "progress",
        "result",
        "best_layer",
        "best_coeff",
        "error",
        "run_id",
    } == TOOL_KEYS
    tool = {key: "x" for key in TOOL_KEYS}
    spec, warnings = parse_spec(load() | tool | {"sample": 3, "colour": ["red"], "tags": ["steering"]})
    assert spec.unknown == {"type": "actadd-experiment", "sample": 3, "colour": ["red"], "tags": ["steering"]}
    assert warnings == [
        "sample: unknown property (did you mean samples?) — kept, not used",
        "colour: unknown property — kept, not used",
    ]


def test_same_add_and_sub_is_refused_the_vector_would_be_zero():
    error = refusal(prompt_sub="Love")
    assert (error.key, str(error)) == (
        "prompt_sub",
        "prompt_sub: 'Love' is the same as prompt_add — the steering vector would be zero",
    )


BODY = """\
Some notes about the run.

- not a prompt: this list is outside the section

## prompts
- First from the body
* "  spaced and quoted  "
  - 'single quoted'

## Results
- not a prompt either
"""


def test_prompts_section_is_appended_after_the_property():
    spec, _ = parse(BODY)
    assert spec.prompts == (
        "I hate you because",
        "I went up to my friend and said",
        "First from the body",
        "  spaced and quoted  ",
        "single quoted",
    )


def test_prompts_section_alone_is_enough():
    spec, _ = parse("## Prompts\n- Only this one\n", prompts=None)
    assert spec.prompts == ("Only this one",)


def test_empty_item_in_prompts_section_is_refused_with_its_line():
    error = refusal("intro\n## Prompts\n- fine\n- \n")
    assert error.key == "prompts"
    assert str(error) == 'prompts: empty prompt in the "## Prompts" section, line 4'


def test_bayes_ranges_from_lists_mappings_and_single_values():
    spec, warnings = parse(search="bayes", layer=[2, 10], coeff={"min": 1, "max": 16}, coeff_scale="log", trials=30)
    assert warnings == []
    assert (spec.layer_range, spec.coeff_range) == ((2, 10), (1.0, 16.0))
    assert (spec.layers, spec.coeffs, spec.trials, spec.coeff_scale) == ((), (), 30, "log")
    pinned, _ = parse(search="bayes", layer=6, coeff=[-8, 8])
    assert (pinned.layer_range, pinned.coeff_range, pinned.trials, pinned.coeff_scale) == (
        (6, 6),
        (-8.0, 8.0),
        20,
        "linear",
    )


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        (
            {"layer": [2, 4, 6]},
            "layer",
            "layer: [2, 4, 6] — search: bayes expects a range [low, high] or {min: …, max: …}",
        ),
        ({"coeff": [8, 1]}, "coeff", "coeff: [8, 1] — the low end 8.0 is above the high end 1.0"),
        ({"coeff": {"lo": 1, "hi": 8}}, "coeff", "coeff: {'lo': 1, 'hi': 8} — expected {min: …, max: …}"),
        ({"layer": [0, 2.5]}, "layer", "layer: 2.5 is not a whole number ≥ 0"),
        (
            {"coeff": [-4, 4], "coeff_scale": "log"},
            "coeff_scale",
            "coeff_scale: log scale needs a positive coeff range, got [-4.0, 4.0] — use coeff_scale: linear",
        ),
        ({"coeff_scale": "exp"}, "coeff_scale", "coeff_scale: 'exp' — expected linear or log"),
        ({"trials": 0}, "trials", "trials: 0 is not a whole number ≥ 1"),
    ],
)
def test_bayes_refusals(changes, key, message):
    error = refusal(**({"search": "bayes", "layer": [0, 10], "coeff": [1, 8]} | changes))
    assert (error.key, str(error)) == (key, message)


def test_bayes_only_keys_are_ignored_with_a_grid():
    spec, warnings = parse(trials=50, coeff_scale="log")
    assert (spec.trials, spec.coeff_scale) == (None, "linear")
    assert warnings == [
        "trials: only used with search: bayes — ignored",
        "coeff_scale: only used with search: bayes — ignored",
    ]


def test_extra_additions():
    spec, _ = parse(
        extra_additions=[
            {"add": "Wedding", "sub": "", "layer": 6, "coeff": 4},
            {"add": "Calm", "sub": "Anger", "layer": 2, "coeff": -1.5},
        ]
    )
    assert spec.extra_additions == (ExtraAddition("Wedding", "", 6, 4.0), ExtraAddition("Calm", "Anger", 2, -1.5))


def test_metrics_get_fluency_and_a_default_objective():
    spec, _ = parse(metrics=["profanity", "sentiment"])
    assert spec.metrics == ("profanity", "sentiment", "fluency")
    assert (spec.objective, spec.direction) == ("profanity", "minimize")  # the metric's own direction
    default, _ = parse(metrics=None)
    assert (default.metrics, default.objective, default.direction) == (
        ("sentiment", "fluency"),
        "sentiment",
        "maximize",
    )
    only_fluency, _ = parse(metrics=["fluency"])
    assert (only_fluency.objective, only_fluency.direction) == ("fluency", "maximize")  # most fluent
    bayes, _ = parse(metrics=["fluency"], search="bayes", layer=[0, 10], coeff=[1, 8])
    assert bayes.objective == "fluency"
    chosen, _ = parse(metrics=["sentiment", "kl"], objective="kl", direction="minimize")
    assert (chosen.objective, chosen.direction) == ("kl", "minimize")


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        (
            {"metrics": ["relevance"]},
            "topic",
            "topic: missing — relevance needs a text to compare completions with, such as weddings",
        ),
        (
            {"metrics": ["topic_rate"], "topic_words": []},
            "topic_words",
            "topic_words: missing — topic_rate needs words to count, such as [wedding, bride, groom]",
        ),
        (
            {"metrics": ["topic_rate"], "topic_words": ["bride", ""]},
            "topic_words",
            "topic_words: item 2 is empty — give a non-empty string",
        ),
        ({"metrics": ["toxicity"]}, "metrics", "metrics: toxicity needs a classifier model"),
        (
            {"metrics": ["sentiment", "toxicity"], "classifier": "some/model"},
            "classifier",
            "classifier: 'some/model' would classify both sentiment and toxicity",
        ),
        (
            {"metrics": ["toxicity"], "classifier": {"toxic": "some/model"}},
            "classifier",
            "classifier: 'toxic' — expected sentiment or toxicity as keys",
        ),
    ],
)
def test_metric_needs_are_checked_at_parse_time(changes, key, message):
    error = refusal(**changes)
    assert error.key == key
    assert str(error).startswith(message)


def test_topic_settings_and_classifiers():
    spec, warnings = parse(
        metrics=["relevance", "topic_rate", "toxicity"],
        topic="weddings",
        topic_words=["wedding", "bride"],
        classifier="s-nlp/roberta_toxicity_classifier",
    )
    assert warnings == []
    assert (spec.topic, spec.topic_words) == ("weddings", ("wedding", "bride"))
    assert spec.classifier == {"toxicity": "s-nlp/roberta_toxicity_classifier"}
    both, _ = parse(metrics=["sentiment", "toxicity"], classifier={"sentiment": "a/sst2", "toxicity": "b/toxic"})
    assert both.classifier == {"sentiment": "a/sst2", "toxicity": "b/toxic"}


def test_unused_metric_settings_are_warned_and_dropped():
    spec, warnings = parse(topic="weddings", topic_words=["bride"], classifier={"toxicity": "b/toxic"})
    assert (spec.topic, spec.topic_words, spec.classifier) == (None, (), {})
    assert warnings == [
        "topic: only used by the relevance metric — ignored",
        "topic_words: only used by the topic_rate metric — ignored",
        "classifier: no toxicity metric to use it — ignored",
    ]


def test_to_dict_is_json_and_reads_back_to_the_same_spec():
    for changes in ({}, {"search": "bayes", "layer": [2, 10], "coeff": [0.5, 8], "coeff_scale": "log"}):
        spec, _ = parse(
            BODY,
            extra_additions=[{"add": "Calm", "sub": "", "layer": 2, "coeff": 1}],
            classifier="a/sst2",
            **changes,
        )
        data = json.loads(json.dumps(spec.to_dict(), allow_nan=False))
        again, warnings = parse_spec(data)
        assert again == spec
        assert warnings == []


def test_spec_hash_ignores_order_defaults_and_bookkeeping():
    props = load()
    spec, _ = parse_spec(props)
    reordered, _ = parse_spec(dict(reversed(list(props.items()))))
    explicit, _ = parse_spec(props | {"top_k": 0, "pad_token": " ", "position": "front", "coeff": [1.0, 2.0, 4.0, 8.0]})
    bookkeeping, _ = parse_spec(
        props
        | {"status": "done", "literature": [], "colour": "red", "max_generations": 10**6, "trials": 99, "batch_size": 8}
    )
    assert len(spec.spec_hash()) == 64
    assert spec.spec_hash() == reordered.spec_hash() == explicit.spec_hash() == bookkeeping.spec_hash()


@pytest.mark.parametrize(
    "changes",
    [
        {"coeff": [1, 2, 4, 16]},
        {"seed": 1},
        {"prompts": ["I hate you because"]},
        {"metrics": ["profanity"]},
    ],
)
def test_spec_hash_changes_with_what_changes_results(changes):
    assert parse(**changes)[0].spec_hash() != parse()[0].spec_hash()


def test_check_layers():
    spec, _ = parse(layer=[2, 40, 50])
    with pytest.raises(SpecError) as caught:
        check_layers(spec, 30, "SmolLM2-135M-Instruct", note="Experiments/love.md")
    assert caught.value.key == "layer"
    assert str(caught.value) == "Experiments/love.md: layer: 40, 50 — SmolLM2-135M-Instruct has layers 0–29"
    check_layers(parse(layer=[0, 29])[0], 30, "SmolLM2-135M-Instruct")


def test_check_layers_covers_ranges_and_extra_additions():
    bayes, _ = parse(search="bayes", layer=[2, 30], coeff=[1, 8])
    with pytest.raises(SpecError, match=r"^layer: \[2, 30\] — tiny has layers 0–29$"):
        check_layers(bayes, 30, "tiny")
    extra, _ = parse(
        layer=[1],
        extra_additions=[
            {"add": "a", "sub": "b", "layer": 1, "coeff": 1},
            {"add": "a", "sub": "b", "layer": 3, "coeff": 1},
        ],
    )
    with pytest.raises(SpecError, match=r"^extra_additions: item 2: layer 3 — tiny has layers 0–2$"):
        check_layers(extra, 3, "tiny")


def test_estimate_work_counts_the_baseline_and_the_confirmation():
    grid, _ = parse()
    rows = 21 * 2 * 20 + 4 * 2 * 20  # the search with its baseline; best, baseline, control and prompting again
    assert estimate_work(grid) == WorkEstimate(settings=25, generations=rows, new_tokens=rows * 30)
    bayes, _ = parse(search="bayes", layer=[0, 10], coeff=[1, 8], trials=30, confirm_samples=5)
    rows = 31 * 2 * 20 + 4 * 2 * 5
    assert estimate_work(bayes) == WorkEstimate(settings=35, generations=rows, new_tokens=rows * 30)
    unconfirmed, _ = parse(confirm=False)
    assert estimate_work(unconfirmed) == WorkEstimate(settings=21, generations=840, new_tokens=840 * 30)


def test_check_work_refuses_runs_over_max_generations():
    fits, _ = parse(max_generations=1000)
    check_work(fits, estimate_work(fits))
    with pytest.raises(SpecError) as caught:  # refused while parsing, before any model is loaded
        parse_spec({**parse()[0].to_dict(), "max_generations": 800}, note="Experiments/love.md")
    assert caught.value.key == "max_generations"
    assert str(caught.value) == (
        "Experiments/love.md: max_generations: 1,000 generations (25 settings with the baseline and the "
        "confirmation × 2 prompts × samples) exceed max_generations 800 — raise max_generations or shrink the grid "
        "(fewer layers or coeffs, prompts or samples)"
    )
