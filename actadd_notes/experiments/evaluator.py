"""Generate and score settings against a sampling-matched baseline, one batched job per call.

Row (prompt i, sample k) draws from seed `row_seed(spec.seed, i, k)` in every setting and in
the baseline, so steered rows and their baseline share random numbers and differences are less
noisy. A stage owns a range of sample indexes: the search uses 0 … samples−1 and the
confirmation the next `confirm_samples`, so no confirmation row reuses a search seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from actadd_notes.errors import Cancelled
from actadd_notes.experiments.metrics import PERPLEXITY, Metric, Objective, build_text_metrics
from actadd_notes.experiments.results import Sample, Setting, SettingResult
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.experiments.stats import prompt_difference, summarize
from actadd_notes.steering.lm import Addition, SteerableLM
from actadd_notes.steering.vectors import ActAdd, SteeringVector

ProgressCallback = Callable[[int, int, str], None]
Scores = dict[str, tuple[list[float], list[int]]]  # score name → (values, prompt index of each value)
_PROMPT_STRIDE = 100_003  # sample indexes below this never collide across prompts


def row_seed(seed: int, prompt_index: int, sample: int) -> int:
    """The sampling seed of row (prompt, sample); distinct for distinct rows of one spec."""
    if not 0 <= sample < _PROMPT_STRIDE:
        raise ValueError(f"sample index {sample} out of range")
    return (seed * 1_000_003 + prompt_index * _PROMPT_STRIDE + sample) % 2**32


def control_seed(seed: int, layer: int) -> int:
    """Seeds the random direction of the control at `layer`; recorded in results.json."""
    return int.from_bytes(hashlib.sha256(f"actadd-control:{seed}:{layer}".encode()).digest()[:4], "little")


def random_direction_like(vector: SteeringVector, seed: int, position: str) -> SteeringVector:
    """A vector that pushes as hard as `vector` where it is added, in a random direction.

    Front mode adds each position's row: the control keeps every row's norm. `all` mode adds
    the mean row everywhere: the control is one random row with the mean's norm."""
    base = vector.vector.detach().float().cpu()
    target = base.mean(dim=0, keepdim=True) if position == "all" else base
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    direction = noise / noise.norm(dim=-1, keepdim=True)
    control = (direction * target.norm(dim=-1, keepdim=True)).to(vector.vector)
    return replace(
        vector,
        vector=control,
        prompt_add="random direction",
        prompt_sub="",
        provenance={**vector.provenance, "control_seed": str(seed), "control_of": vector.prompt_add},
    )


@dataclass
class Progress:
    """Rows generated so far across every stage, and the user's way to stop between batches."""

    total: int
    callback: ProgressCallback | None = None
    cancelled: Callable[[], bool] | None = None
    done: int = 0

    def batch(self, done_in_call: int) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("cancelled")
        self.report("generating", done_in_call)

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
    ):
        self.spec = spec
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
        self._controls: dict[int, SteeringVector] = {}
        self._values: dict[Setting, Scores] = {}

    @property
    def seeds(self) -> set[int]:
        """Every sampling seed this stage uses."""
        return {
            row_seed(self.spec.seed, i, self.first_sample + k)
            for i in range(len(self.spec.prompts))
            for k in range(self.samples_per_prompt)
        }

    def control_vector(self, layer: int) -> SteeringVector:
        """The random-direction control of the main vector at `layer` (one object per layer, so
        the hooks steer all its rows with one indexed add)."""
        if layer not in self._controls:
            spec = self.spec
            vector = self.lm.steering_vector(ActAdd(spec.prompt_add, spec.prompt_sub, layer, 1.0, spec.pad_token))
            self._controls[layer] = random_direction_like(vector, control_seed(spec.seed, layer), spec.position)
        return self._controls[layer]

    def additions(self, setting: Setting) -> list[Addition] | None:
        if setting.is_baseline:
            return None
        spec = self.spec
        assert setting.layer is not None and setting.coeff is not None
        main: Addition = (
            self.control_vector(setting.layer).with_coeff(setting.coeff)
            if setting.control
            else ActAdd(spec.prompt_add, spec.prompt_sub, setting.layer, setting.coeff, spec.pad_token)
        )
        extra = [ActAdd(a.add, a.sub, a.layer, a.coeff, spec.pad_token) for a in spec.extra_additions]
        return [main, *extra]

    def evaluate(self, settings: Sequence[Setting]) -> list[SettingResult]:
        """Generate and score `settings` in one batched job (the baseline first, if not done yet)."""
        spec = self.spec
        todo = list(settings)
        if self.baseline is None:
            todo.insert(0, Setting())
        steer = {n: self.additions(s) for n, s in enumerate(todo)}
        # rows carry their setting's position in `todo`: a search may propose one setting twice
        rows = [
            (n, i, self.first_sample + k)
            for n in range(len(todo))
            for i in range(len(spec.prompts))
            for k in range(self.samples_per_prompt)
        ]
        completions = self.lm.complete(
            [spec.prompts[i] for _, i, _ in rows],
            seeds=[row_seed(spec.seed, i, k) for _, i, k in rows],
            steer=[steer[n] for n, _, _ in rows],
            max_new_tokens=spec.max_new_tokens,
            chat=spec.chat,
            position=spec.position,
            batch_size=spec.batch_size,
            progress=lambda done, total: self.progress.batch(done),
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            freq_penalty=spec.freq_penalty,
        )
        self.progress.done += len(rows)
        self.progress.report("scoring")
        scores: dict[str, list[float]] = {PERPLEXITY: self.lm.perplexities(completions, batch_size=spec.batch_size)}
        texts = [c.text for c in completions]
        prompts = [c.prompt for c in completions]
        for metric in self.metrics:
            scores[metric.name] = metric.score(prompts, texts)
        for index, (n, prompt_index, sample) in enumerate(rows):
            row_scores = {name: values[index] for name, values in scores.items()}
            self.samples.append(Sample(self.stage, todo[n], prompt_index, sample, completions[index], row_scores))
        results = []
        for position, setting in enumerate(todo):
            picked = [index for index, row in enumerate(rows) if row[0] == position]
            per_setting = {
                name: ([values[i] for i in picked], [rows[i][1] for i in picked]) for name, values in scores.items()
            }
            if "kl" in spec.metrics:
                per_setting["kl"] = (self._kl(setting, steer[position]), list(range(len(spec.prompts))))
            self._values[setting] = per_setting
            result = self._summarise(setting, per_setting)
            if setting.is_baseline:
                self.baseline = result
                self._baseline_scores = per_setting
            else:
                results.append(result)
        return results

    def _kl(self, setting: Setting, additions: list[Addition] | None) -> list[float]:
        """KL(steered ‖ unsteered) of the next-token distribution at the end of each prompt."""
        spec = self.spec
        if self._baseline_logits is None:
            self._baseline_logits = self.lm.next_token_logits(spec.prompts, chat=spec.chat)
        if additions is None:
            return [0.0] * len(spec.prompts)
        steered = self.lm.next_token_logits(spec.prompts, steer=additions, chat=spec.chat, position=spec.position)
        p = torch.log_softmax(steered, -1)
        q = torch.log_softmax(self._baseline_logits, -1)
        return [float(x) for x in (p.exp() * (p - q)).sum(-1).tolist()]

    def _summarise(self, setting: Setting, values: Scores) -> SettingResult:
        baseline = None if setting.is_baseline else self._baseline_scores
        return summarise_setting(setting, values, baseline, self.spec.max_perplexity_ratio)

    def scores_of(self, setting: Setting, score: str) -> tuple[list[float], list[int]]:
        """The values of `score` for `setting` in this stage (its last evaluation), with their prompt indexes."""
        return self._values[setting][score]


def summarise_setting(
    setting: Setting, values: Scores, baseline: Scores | None, max_perplexity_ratio: float
) -> SettingResult:
    """Summaries of every score, differences to `baseline` (None: this is the baseline) and the
    fluency guard's decision. `Scores` maps a score name to its values and their prompt indexes."""
    result = SettingResult(setting, {name: summarize(v) for name, (v, _) in values.items()})
    if baseline is None:
        return result
    result.differences = {
        name: prompt_difference(v, baseline[name][0], prompts, baseline[name][1])
        for name, (v, prompts) in values.items()
    }
    base, mine = summarize(baseline[PERPLEXITY][0]).mean, result.mean(PERPLEXITY)
    result.perplexity_ratio = mine / base if base and mine is not None else math.inf
    result.rejected = not result.perplexity_ratio <= max_perplexity_ratio
    return result


def text_metrics(spec: ExperimentSpec) -> list[Metric]:
    return build_text_metrics(
        spec.metrics, topic=spec.topic, topic_words=spec.topic_words, classifier=spec.classifier or None
    )
