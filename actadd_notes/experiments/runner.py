"""Run an experiment spec on a `SteerableLM` and return a self-describing result.

Scientific ground rules, enforced here rather than left to the user:
* every run carries a sampling-matched baseline: the same prompts, seeds and sampling,
  no steering; row (prompt i, sample s) uses the same seed in every setting, so steered
  rows and their baseline share random numbers and differences are less noisy;
* every metric comes with a 95% CI and its difference to the baseline (Welch);
* a fluency guard rejects settings whose perplexity (under the unsteered model)
  exceeds `max_perplexity_ratio` × the baseline's: degenerate text cannot win.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from actadd_notes.errors import Cancelled
from actadd_notes.experiments.metrics import Metric, build_text_metrics
from actadd_notes.experiments.spec import ExperimentSpec, check_layers, check_work, estimate_work
from actadd_notes.experiments.stats import Difference, Summary, difference, summarize
from actadd_notes.steering.lm import Completion, SteerableLM
from actadd_notes.steering.vectors import ActAdd

SCHEMA = "actadd-notes/results/v1"
PERPLEXITY = "perplexity"


@dataclass(frozen=True)
class Setting:
    """One point of the search; the baseline has neither layer nor coeff."""

    layer: int | None = None
    coeff: float | None = None

    @property
    def is_baseline(self) -> bool:
        return self.layer is None

    @property
    def label(self) -> str:
        return "baseline" if self.is_baseline else f"L{self.layer} c{self.coeff:g}"


@dataclass
class SettingResult:
    setting: Setting
    metrics: dict[str, Summary]
    differences: dict[str, Difference] = field(default_factory=dict)
    perplexity_ratio: float = 1.0
    rejected: bool = False

    def objective(self, metric: str) -> float | None:
        summary = self.metrics.get(metric)
        return None if summary is None else summary.mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.setting.label,
            "layer": self.setting.layer,
            "coeff": self.setting.coeff,
            "metrics": {name: asdict(s) for name, s in self.metrics.items()},
            "differences": {name: asdict(d) for name, d in self.differences.items()},
            "perplexity_ratio": self.perplexity_ratio,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class Sample:
    """One generated completion and its scores: a row of completions.csv."""

    setting: Setting
    prompt_index: int
    sample: int
    completion: Completion
    scores: dict[str, float]


@dataclass
class ExperimentResult:
    spec: ExperimentSpec
    baseline: SettingResult
    settings: list[SettingResult]
    samples: list[Sample]
    objective: str
    best: SettingResult | None
    findings: list[str]
    diagnostics: list[dict[str, Any]]
    reproducibility: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    trials_to_best: int | None = None

    def examples(self, setting: Setting, limit: int = 5) -> list[dict[str, Any]]:
        rows = [s for s in self.samples if s.setting == setting][:limit]
        return [
            {"prompt": s.completion.prompt, "completion": s.completion.text, "seed": s.completion.seed} for s in rows
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "spec": self.spec.to_dict(),
            "spec_hash": self.spec.spec_hash(),
            "search": self.spec.search,
            "objective": {"metric": self.objective, "direction": self.spec.direction},
            "max_perplexity_ratio": self.spec.max_perplexity_ratio,
            "baseline": self.baseline.to_dict(),
            "settings": [s.to_dict() for s in self.settings],
            "best": self.best.to_dict() if self.best else None,
            "trials": self.trials,
            "trials_to_best": self.trials_to_best,
            "findings": self.findings,
            "diagnostics": self.diagnostics,
            "examples": {
                "baseline": self.examples(self.baseline.setting),
                "best": self.examples(self.best.setting) if self.best else [],
            },
            "reproducibility": self.reproducibility,
            "warnings": self.warnings,
        }


ProgressCallback = Callable[[int, int, str], None]


class Evaluator:
    """Scores batches of settings against one shared baseline; the search strategies call it."""

    def __init__(
        self,
        spec: ExperimentSpec,
        lm: SteerableLM,
        *,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
        total_rows: int = 0,
    ):
        self.spec = spec
        self.lm = lm
        self.metrics: list[Metric] = build_text_metrics(
            spec.metrics, topic=spec.topic, topic_words=spec.topic_words, classifier=spec.classifier or None
        )
        self.samples: list[Sample] = []
        self.baseline: SettingResult | None = None
        self._baseline_scores: dict[str, list[float]] = {}
        self._baseline_logits: torch.Tensor | None = None
        self._progress = progress
        self._cancelled = cancelled
        self._done_rows = 0
        self.total_rows = total_rows

    def _seed(self, prompt_index: int, sample: int) -> int:
        return (self.spec.seed * 1_000_003 + prompt_index * 100_003 + sample) % 2**32

    def _additions(self, setting: Setting) -> list[ActAdd] | None:
        if setting.is_baseline:
            return None
        spec = self.spec
        main = ActAdd(spec.prompt_add, spec.prompt_sub, setting.layer, setting.coeff, spec.pad_token)
        extra = [ActAdd(a.add, a.sub, a.layer, a.coeff, spec.pad_token) for a in spec.extra_additions]
        return [main, *extra]

    def evaluate(self, settings: Sequence[Setting]) -> list[SettingResult]:
        """Generate and score `settings` in one batched job (the baseline first, if not done yet)."""
        spec = self.spec
        todo = list(settings)
        if self.baseline is None:
            todo.insert(0, Setting())
        # rows carry their setting's position in `todo`: a search may propose one setting twice
        rows = [(n, s, i, k) for n, s in enumerate(todo) for i in range(len(spec.prompts)) for k in range(spec.samples)]
        completions = self.lm.complete(
            [spec.prompts[i] for _, _, i, _ in rows],
            seeds=[self._seed(i, k) for _, _, i, k in rows],
            steer=[self._additions(s) for _, s, _, _ in rows],
            max_new_tokens=spec.max_new_tokens,
            chat=spec.chat,
            position=spec.position,
            batch_size=spec.batch_size,
            progress=self._on_batch,
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            freq_penalty=spec.freq_penalty,
        )
        self._done_rows += len(rows)
        self._report("scoring")
        scores: dict[str, list[float]] = {PERPLEXITY: self.lm.perplexities(completions, batch_size=spec.batch_size)}
        texts = [c.text for c in completions]
        prompts = [c.prompt for c in completions]
        for metric in self.metrics:
            scores[metric.name] = metric.score(prompts, texts)
        for index, (_, setting, prompt_index, sample) in enumerate(rows):
            row_scores = {name: values[index] for name, values in scores.items()}
            self.samples.append(Sample(setting, prompt_index, sample, completions[index], row_scores))
        results = []
        for position, setting in enumerate(todo):
            picked = [index for index, row in enumerate(rows) if row[0] == position]
            per_setting = {name: [values[n] for n in picked] for name, values in scores.items()}
            if "kl" in spec.metrics:
                per_setting["kl"] = self._kl(setting)
            result = self._summarise(setting, per_setting)
            if setting.is_baseline:
                self.baseline = result
                self._baseline_scores = per_setting
            else:
                results.append(result)
        return results

    def _kl(self, setting: Setting) -> list[float]:
        """KL(steered ‖ unsteered) of the next-token distribution at the end of each prompt."""
        spec = self.spec
        if self._baseline_logits is None:
            self._baseline_logits = self.lm.next_token_logits(spec.prompts, chat=spec.chat)
        if setting.is_baseline:
            return [0.0] * len(spec.prompts)
        steered = self.lm.next_token_logits(
            spec.prompts, steer=self._additions(setting), chat=spec.chat, position=spec.position
        )
        p = torch.log_softmax(steered, -1)
        q = torch.log_softmax(self._baseline_logits, -1)
        return (p.exp() * (p - q)).sum(-1).tolist()

    def _summarise(self, setting: Setting, values: dict[str, list[float]]) -> SettingResult:
        summaries = {name: summarize(v) for name, v in values.items()}
        result = SettingResult(setting, summaries)
        if setting.is_baseline:
            return result
        result.differences = {name: difference(v, self._baseline_scores[name]) for name, v in values.items()}
        base = self.baseline.metrics[PERPLEXITY].mean
        mine = summaries[PERPLEXITY].mean
        result.perplexity_ratio = mine / base if base and mine is not None else math.inf
        result.rejected = not result.perplexity_ratio <= self.spec.max_perplexity_ratio
        return result

    def _on_batch(self, done: int, total: int) -> None:
        if self._cancelled is not None and self._cancelled():
            raise Cancelled("cancelled")
        self._report("generating", done)

    def _report(self, stage: str, extra: int = 0) -> None:
        if self._progress is not None:
            self._progress(self._done_rows + extra, max(self.total_rows, self._done_rows + extra), stage)


def run_experiment(
    spec: ExperimentSpec,
    lm: SteerableLM,
    *,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    provenance: dict[str, Any] | None = None,
    note: str | None = None,
) -> ExperimentResult:
    """Run `spec` (grid or bayes) with its baseline; `progress(done, total, stage)` follows it."""
    from actadd_notes.experiments.search import run_bayes, run_grid

    check_layers(spec, lm.num_layers, lm.short_name, note=note)
    estimate = estimate_work(spec)
    check_work(spec, estimate, note=note)
    started = time.perf_counter()
    evaluator = Evaluator(spec, lm, progress=progress, cancelled=cancelled, total_rows=estimate.generations)
    objective = spec.objective or "sentiment"
    if objective == "fluency":  # fluency is scored as perplexity
        objective = PERPLEXITY
    if spec.search == "bayes":
        settings, trials, trials_to_best = run_bayes(spec, evaluator, objective)
    else:
        settings, trials, trials_to_best = run_grid(spec, evaluator), [], None
    best = pick_best(settings, objective, spec.direction)
    result = ExperimentResult(
        spec=spec,
        baseline=evaluator.baseline,
        settings=settings,
        samples=evaluator.samples,
        objective=objective,
        best=best,
        findings=[],
        diagnostics=vector_diagnostics(spec, lm, settings),
        reproducibility={},
        trials=trials,
        trials_to_best=trials_to_best,
    )
    result.findings = findings(result)
    result.reproducibility = reproducibility(spec, lm, time.perf_counter() - started, provenance or {})
    return result


def pick_best(settings: Sequence[SettingResult], objective: str, direction: str) -> SettingResult | None:
    """The best setting that passed the fluency guard, by the objective's mean."""
    allowed = [s for s in settings if not s.rejected and s.objective(objective) is not None]
    if not allowed:
        return None
    sign = 1 if direction == "maximize" else -1
    return max(allowed, key=lambda s: sign * s.objective(objective))


def findings(result: ExperimentResult) -> list[str]:
    """Plain statements for the result note, including the absence of an effect."""
    metric, spec = result.objective, result.spec
    lines = []
    base = result.baseline.metrics.get(metric)
    rejected = [s for s in result.settings if s.rejected]
    if rejected:
        worst = max(rejected, key=lambda s: s.perplexity_ratio)
        labels = ", ".join(s.setting.label for s in rejected)
        lines.append(
            f"{len(rejected)} of {len(result.settings)} settings failed the fluency guard (perplexity > "
            f"{spec.max_perplexity_ratio:g}× baseline): {labels}; worst {worst.setting.label} at "
            f"{worst.perplexity_ratio:.1f}×."
        )
    if result.best is None:
        lines.append("No setting passed the fluency guard: no best setting.")
        return lines
    diff = result.best.differences.get(metric)
    if base is None or diff is None or diff.ci_low is None:
        return lines
    favourable = diff.ci_low > 0 if spec.direction == "maximize" else diff.ci_high < 0
    best = result.best.metrics[metric]
    lines.append(
        f"Best: {result.best.setting.label} — {metric} {best.mean:.3f} [{best.ci_low:.3f}, {best.ci_high:.3f}] vs "
        f"baseline {base.mean:.3f} [{base.ci_low:.3f}, {base.ci_high:.3f}]; difference {diff.estimate:+.3f} "
        f"[{diff.ci_low:+.3f}, {diff.ci_high:+.3f}], perplexity {result.best.perplexity_ratio:.2f}× baseline."
    )
    if favourable:
        lines.append(f"The best setting's 95% CI of the difference excludes 0: {metric} moved in the wanted direction.")
    else:
        lines.append(
            f"No detectable effect: the best setting's 95% CI of the difference includes 0 — "
            f"at this sample size the steering did not move {metric}."
        )
    if len(result.settings) > 1 and result.best.perplexity_ratio > 0.9 * spec.max_perplexity_ratio:
        lines.append(
            f"The best setting sits close to the fluency guard ({result.best.perplexity_ratio:.2f}× of "
            f"{spec.max_perplexity_ratio:g}×), and the best of many noisy estimates is optimistic: re-score it "
            "on fresh seeds (another `seed`, more `samples`) before relying on it."
        )
    against = [
        s
        for s in result.settings
        if not s.rejected
        and s.differences.get(metric)
        and s.differences[metric].ci_low is not None
        and (s.differences[metric].ci_high < 0 if spec.direction == "maximize" else s.differences[metric].ci_low > 0)
    ]
    if against:
        labels = ", ".join(s.setting.label for s in against[:6])
        lines.append(f"{len(against)} setting(s) moved {metric} the opposite way: {labels}.")
    negative = [s for s in result.settings if s.setting.coeff is not None and s.setting.coeff < 0 and not s.rejected]
    if negative and not any(s in against for s in negative) and spec.direction == "maximize":
        lines.append(
            f"Negative coefficients did not detectably reverse {metric} (on small models they mostly add noise)."
        )
    return lines


def vector_diagnostics(
    spec: ExperimentSpec, lm: SteerableLM, settings: Sequence[SettingResult]
) -> list[dict[str, Any]]:
    """Per-position norms of each vector used, against the residual norm typical at its layer.

    Small models carry huge activations at the first position and at lone pad tokens; those
    positions then dominate a vector, and a researcher has to see it.
    """
    layers = sorted({s.setting.layer for s in settings})  # the main vector only where it was applied
    pairs = [(spec.prompt_add, spec.prompt_sub, layers)] + [(a.add, a.sub, [a.layer]) for a in spec.extra_additions]
    prompt_norms = []
    for prompt in spec.prompts:
        stacked, _ = lm.activations([prompt], pad_token=spec.pad_token)
        prompt_norms.append(stacked[:, 0].float().norm(dim=-1))  # [layers, T]
    rows = []
    for add, sub, pair_layers in pairs:
        for layer in pair_layers:
            vector = lm.steering_vector(ActAdd(add, sub, layer, 1.0, spec.pad_token))
            first = [float(n[layer, 0]) for n in prompt_norms]
            rest = (
                torch.cat([n[layer, 1:] for n in prompt_norms]) if any(n.shape[1] > 1 for n in prompt_norms) else None
            )
            rows.append(
                {
                    "prompt_add": add,
                    "prompt_sub": sub,
                    "layer": layer,
                    "tokens_add": _readable_tokens(lm, vector.add_ids),
                    "tokens_sub": _readable_tokens(lm, vector.sub_ids),
                    "vector_norms": [round(float(x), 2) for x in vector.vector.float().norm(dim=-1)],
                    "residual_norm_first_position": round(sum(first) / len(first), 2),
                    "residual_norm_typical": round(float(rest.median()), 2) if rest is not None else None,
                }
            )
    return rows


def _readable_tokens(lm: SteerableLM, ids: Sequence[int]) -> list[str]:
    """Each token as text, a space shown as ␣ (a lone pad token is otherwise invisible)."""
    return [lm.tokenizer.decode([i]).replace(" ", "␣") or repr(i) for i in ids]


def reproducibility(spec: ExperimentSpec, lm: SteerableLM, wall_time: float, extra: dict[str, Any]) -> dict[str, Any]:
    record = {
        "seed": spec.seed,
        "spec_hash": spec.spec_hash(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **lm.provenance(),
        "wall_time_s": round(wall_time, 2),
        **extra,
    }
    return {key: value for key, value in record.items() if value not in ("", None)}
