"""Generate and score settings against a sampling-matched baseline, one batched job per call.

Row (prompt i, sample k) draws from seed `row_seed(spec.seed, i, k)` in every setting and in
the baseline, so steered rows and their baseline share random numbers and differences are less
noisy. A stage owns a range of sample indexes and a set of prompts: the search uses samples
0 … samples−1 and the confirmation the next `confirm_samples`, so no confirmation row reuses a
search seed (and with held-out prompts, no search prompt either).

The prompting baseline's rows carry its words around the prompt; they are scored as a
continuation of the user's prompt alone, as steered rows are, so the fluency guard and the
metrics judge both the same way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from actadd_notes.errors import Cancelled
from actadd_notes.experiments.additions import Additions
from actadd_notes.experiments.degeneration import (
    REPETITION,
    SPECIAL_TOKENS,
    flagged_text,
    non_text_ids,
    repetition,
    special_token_rate,
)
from actadd_notes.experiments.metrics import PERPLEXITY, Metric, Objective, build_text_metrics, rate_scores
from actadd_notes.experiments.results import (
    PERPLEXITY_GUARD,
    REPETITION_GUARD,
    SPECIAL_TOKENS_GUARD,
    Sample,
    Setting,
    SettingResult,
)
from actadd_notes.experiments.rows import LocalRows, Row, RowRunner, as_continuations, row_seed, row_text
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.experiments.stats import stratified_difference, summarize
from actadd_notes.steering.lm import Addition, SteerableLM

ProgressCallback = Callable[[int, int, str], None]
Scores = dict[str, tuple[list[float], list[int]]]  # score name → (values, prompt index of each value)


@dataclass
class Progress:
    """Rows generated so far across every stage, and the user's way to stop between batches."""

    total: int
    callback: ProgressCallback | None = None
    cancelled: Callable[[], bool] | None = None
    done: int = 0

    def batch(self, done_in_call: int) -> None:
        self.check()
        self.report("generating", done_in_call)

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("cancelled")

    def report(self, stage: str, extra: int = 0) -> None:
        if self.callback is not None:
            self.callback(self.done + extra, max(self.total, self.done + extra), stage)


class Evaluator:
    """Scores batches of settings against one baseline on one stage's seeds."""

    def __init__(
        self,
        spec: ExperimentSpec,
        lm: SteerableLM,
        objective: Objective,
        *,
        stage: str,
        first_sample: int = 0,
        samples: int | None = None,
        progress: Progress | None = None,
        metrics: Sequence[Metric] | None = None,
        additions: Additions | None = None,
        prompts: Sequence[int] | None = None,
        rows: RowRunner | None = None,
    ):
        self.spec = spec
        self.prompt_indices = tuple(prompts) if prompts is not None else tuple(range(len(spec.prompts)))
        self.lm = lm
        self.objective = objective
        self.stage = stage
        self.first_sample = first_sample
        self.samples_per_prompt = samples or spec.samples
        self.progress = progress or Progress(0)
        self.metrics = list(metrics) if metrics is not None else text_metrics(spec)
        self.samples: list[Sample] = []
        self.baseline: SettingResult | None = None
        self._baseline_scores: Scores = {}
        self._baseline_logits: torch.Tensor | None = None
        self.additions = additions or Additions(spec, lm)
        self.rows = rows or LocalRows(lm, self.additions)
        self._values: dict[Setting, Scores] = {}
        self._records: list[dict[str, str]] = []

    @property
    def seeds(self) -> set[int]:
        """Every sampling seed this stage uses."""
        return {
            row_seed(self.spec.seed, i, self.first_sample + k)
            for i in self.prompt_indices
            for k in range(self.samples_per_prompt)
        }

    def evaluate(self, settings: Sequence[Setting]) -> list[SettingResult]:
        """Generate and score `settings` in one batched job (the baseline first, if not done yet)."""
        spec = self.spec
        todo = list(settings)
        if self.baseline is None:
            todo.insert(0, Setting())
        prompts_of = self.prompt_indices
        # rows carry their setting's position in `todo`: a search may propose one setting twice
        positions = [
            (n, i, self.first_sample + k)
            for n in range(len(todo))
            for i in prompts_of
            for k in range(self.samples_per_prompt)
        ]
        rows = [Row(todo[n], i, k) for n, i, k in positions]
        done = self.rows.run(spec, rows, progress=self.progress.batch)
        completions = done.completions
        self.progress.done += len(rows)
        self.progress.report("scoring")
        scored = as_continuations(spec, self.lm, completions, rows)
        perplexities = self.rows.score(spec, scored, progress=lambda done: self.progress.check())
        scores: dict[str, list[float]] = {PERPLEXITY: perplexities.perplexities}
        scores[REPETITION] = [repetition(c.token_ids) for c in completions]
        scores[SPECIAL_TOKENS] = [special_token_rate(c.token_ids, self._non_text) for c in completions]
        self._records.append({**done.record, **perplexities.record})
        texts = [c.text for c in scored]
        prompts = [c.prompt for c in scored]
        for metric in self.metrics:
            scores[metric.name] = metric.score(prompts, texts)
        scores.update(rate_scores(scores))
        for index, (n, prompt_index, sample) in enumerate(positions):
            row_scores = {name: values[index] for name, values in scores.items()}
            completion = completions[index]
            flagged = flagged_text(completion.token_ids, self.lm.tokenizer, self._non_text)
            self.samples.append(Sample(self.stage, todo[n], prompt_index, sample, completion, row_scores, flagged))
        results = []
        for position, setting in enumerate(todo):
            picked = [index for index, row in enumerate(positions) if row[0] == position]
            per_setting = {
                name: ([values[i] for i in picked], [positions[i][1] for i in picked])
                for name, values in scores.items()
            }
            if "kl" in spec.metrics:
                per_setting["kl"] = (self._kl(setting), list(prompts_of))
            self._values[setting] = per_setting
            result = self._summarise(setting, per_setting)
            if setting.is_baseline:
                self.baseline = result
                self._baseline_scores = per_setting
            else:
                results.append(result)
        return results

    @functools.cached_property
    def _non_text(self) -> frozenset[int]:
        return non_text_ids(self.lm.tokenizer)

    def _kl(self, setting: Setting) -> list[float]:
        """KL(this setting ‖ unsteered) of the next-token distribution at the end of each of this stage's prompts."""
        spec = self.spec
        prompts = [spec.prompts[i] for i in self.prompt_indices]
        if self._baseline_logits is None:
            self._baseline_logits = self.lm.next_token_logits(prompts, chat=spec.chat)
        if setting.is_baseline:
            return [0.0] * len(prompts)
        if setting.prompting:
            worded = [row_text(self.spec, Row(setting, i, 0)) for i in self.prompt_indices]
            steered = self.lm.next_token_logits(worded, chat=spec.chat)
        else:
            additions: list[list[Addition] | None] = [
                self.additions.for_row(setting, i, self.first_sample) for i in self.prompt_indices
            ]
            steered = self.lm.next_token_logits(prompts, steer=additions, chat=spec.chat, position=spec.position)
        p = torch.log_softmax(steered, -1)
        q = torch.log_softmax(self._baseline_logits, -1)
        return [float(x) for x in (p.exp() * (p - q)).sum(-1).tolist()]

    def _summarise(self, setting: Setting, values: Scores) -> SettingResult:
        baseline = None if setting.is_baseline else self._baseline_scores
        spec = self.spec
        result = summarise_setting(
            setting,
            values,
            baseline,
            spec.max_perplexity_ratio,
            max_repetition_increase=spec.max_repetition_increase,
            max_special_token_increase=spec.max_special_token_increase,
        )
        if setting.layer is not None and setting.coeff is not None:
            result.applied_coeff = self.additions.applied_coeff(setting.layer, setting.coeff)
        return result

    @property
    def record(self) -> dict[str, str]:
        """How this stage's generation and scoring ran (decode path, batch plan, batches), prefixed by
        the stage; a value that changed between a search's rounds lists each round's, `;`-joined."""
        keys = dict.fromkeys(key for record in self._records for key in record)
        merged = {}
        for key in keys:
            values = list(dict.fromkeys(record.get(key, "") for record in self._records))
            merged[f"{self.stage}_{key}"] = "; ".join(values)
        if len(self._records) > 1:
            merged[f"{self.stage}_calls"] = str(len(self._records))
        return merged

    def scores_of(self, setting: Setting, score: str) -> tuple[list[float], list[int]]:
        """The values of `score` for `setting` in this stage (its last evaluation), with their prompt indexes."""
        return self._values[setting][score]


def summarise_setting(
    setting: Setting,
    values: Scores,
    baseline: Scores | None,
    max_perplexity_ratio: float,
    *,
    max_repetition_increase: float = math.inf,
    max_special_token_increase: float = math.inf,
) -> SettingResult:
    """Summaries of every score, differences to `baseline` (None: this is the baseline) and the
    fluency guard's decision. `Scores` maps a score name to its values and their prompt indexes.

    The guard rejects a setting whose mean perplexity exceeds `max_perplexity_ratio` × the baseline's,
    or whose mean repetition or special-token rate exceeds the baseline's by more than its limit
    (absolute: both are shares); `rejected_for` names each failure. A score absent from either side
    is not guarded (the evaluator always computes all three)."""
    result = SettingResult(setting, {name: summarize(v) for name, (v, _) in values.items()})
    if baseline is None:
        return result
    result.differences = {
        name: stratified_difference(v, baseline[name][0], prompts, baseline[name][1])
        for name, (v, prompts) in values.items()
    }
    base, mine = summarize(baseline[PERPLEXITY][0]).mean, result.mean(PERPLEXITY)
    result.perplexity_ratio = mine / base if base and mine is not None else math.inf
    failed = [PERPLEXITY_GUARD] if not result.perplexity_ratio <= max_perplexity_ratio else []
    for score, guard, limit in (
        (REPETITION, REPETITION_GUARD, max_repetition_increase),
        (SPECIAL_TOKENS, SPECIAL_TOKENS_GUARD, max_special_token_increase),
    ):
        if score in values and score in baseline and not _increase(result, baseline, score) <= limit:
            failed.append(guard)
    result.rejected_for = tuple(failed)
    result.rejected = bool(failed)
    return result


def _increase(result: SettingResult, baseline: Scores, score: str) -> float:
    """The setting's mean of `score` minus the baseline's (NaN when either has none: the guard fails)."""
    base, mine = summarize(baseline[score][0]).mean, result.mean(score)
    return math.nan if base is None or mine is None else mine - base


def text_metrics(spec: ExperimentSpec) -> list[Metric]:
    return build_text_metrics(
        spec.metrics, topic=spec.topic, topic_words=spec.topic_words, classifier=spec.classifier or None
    )
