"""What a run produced, as plain data: settings, their scores, the confirmation, the verdict.

Everything publishing needs is here (the vectors included), so writing a result note needs no
model. `ExperimentResult.to_dict` is results.json (schema `actadd-notes/results/v4`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from actadd_notes.experiments.design import PromptSplit
from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.experiments.stats import Difference, Proportion, Summary

if TYPE_CHECKING:
    from actadd_notes.steering.lm import Completion
    from actadd_notes.steering.vectors import SteeringVector

SCHEMA = "actadd-notes/results/v4"
SEARCH, CONFIRMATION = "search", "confirmation"
# The fluency guard's checks, as `SettingResult.rejected_for` names a failure (evaluator.summarise_setting)
PERPLEXITY_GUARD, REPETITION_GUARD, SPECIAL_TOKENS_GUARD = "perplexity", "repetition", "special tokens"

# The verdict words, in the `effect` property of every result note
DETECTED = "detected"  # confirmed on fresh seeds, and beats the random-direction control
NOT_SPECIFIC = "not specific"  # confirmed, but a random push of the same size does as much
NOT_DETECTED = "not detected"  # the confirmation did not bear the search's winner out
EXPLORATORY = "exploratory"  # confirmation turned off: the search estimate alone
NO_SETTING = "none"  # no setting passed the fluency guard
EFFECTS = (DETECTED, NOT_SPECIFIC, NOT_DETECTED, EXPLORATORY, NO_SETTING)

# What a verdict speaks of, in the `scope` property
THESE_PROMPTS = "these prompts"  # the confirmation's prompts as fixed strata: no claim about others
HELD_OUT_PROMPTS = "held-out prompts"  # prompts the search never saw, as the unit: prompts drawn like these

# How steering compared with the prompting baseline, in the `versus_prompting` property
BEATS_PROMPTING = "steering better"
LIKE_PROMPTING = "no detectable difference"
PROMPTING_BETTER = "prompting better"


@dataclass(frozen=True)
class Setting:
    """One point of the search; the baseline has neither layer nor coeff.

    A `control` setting adds, instead of the steering vector, a vector of the same
    per-position norms in a random direction, at the same layer and coefficient. `offset` moves
    a front addition that many positions later (the label shows it when it is not 0). The
    `prompting` setting steers nothing and asks in words instead: the prompting baseline."""

    layer: int | None = None
    coeff: float | None = None
    control: bool = False
    offset: int = 0
    prompting: bool = False

    @property
    def is_baseline(self) -> bool:
        return self.layer is None and not self.prompting

    @property
    def steers(self) -> bool:
        return self.layer is not None

    @property
    def label(self) -> str:
        if self.prompting:
            return "prompting"
        if self.is_baseline:
            return "baseline"
        offset = f" a{self.offset}" if self.offset else ""
        return f"{'control ' if self.control else ''}L{self.layer} c{self.coeff:g}{offset}"


@dataclass
class SettingResult:
    setting: Setting
    metrics: dict[str, Summary]  # by score name (fluency is scored as perplexity)
    differences: dict[str, Difference] = field(default_factory=dict)  # to the same stage's baseline
    perplexity_ratio: float = 1.0
    rejected: bool = False
    rejected_for: tuple[str, ...] = ()  # the guards it failed: perplexity, repetition, special tokens
    p_holm: float | None = None  # the objective's p-value, Holm-adjusted over every setting searched
    applied_coeff: float | None = None  # the raw coefficient applied (differs with coeff_unit: residual_norm)

    def mean(self, score: str) -> float | None:
        summary = self.metrics.get(score)
        return None if summary is None else summary.mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.setting.label,
            "layer": self.setting.layer,
            "coeff": self.setting.coeff,
            "control": self.setting.control,
            "offset": self.setting.offset,
            "prompting": self.setting.prompting,
            "applied_coeff": self.applied_coeff,
            "metrics": {name: asdict(s) for name, s in self.metrics.items()},
            "differences": {name: asdict(d) for name, d in self.differences.items()},
            "perplexity_ratio": self.perplexity_ratio,
            "rejected": self.rejected,
            "rejected_for": list(self.rejected_for),
            "p_holm": self.p_holm,
        }


@dataclass(frozen=True)
class Sample:
    """One generated completion and its scores: a row of completions.csv."""

    stage: str
    setting: Setting
    prompt_index: int
    sample: int
    completion: Completion
    scores: dict[str, float]
    flagged: str | None = None  # the text with its special or added tokens shown as ⟦token⟧; None: it has none


@dataclass(frozen=True)
class PromptEffect:
    """One confirmation prompt: the best setting's difference to the baseline over that prompt's
    samples (Welch), and its differences to the control and to prompting."""

    prompt_index: int
    difference: Difference
    versus_control: Difference | None = None
    versus_prompting: Difference | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_index": self.prompt_index,
            "difference": asdict(self.difference),
            "versus_control": asdict(self.versus_control) if self.versus_control else None,
            "versus_prompting": asdict(self.versus_prompting) if self.versus_prompting else None,
        }


@dataclass(frozen=True)
class Heterogeneity:
    """How the confirmation prompts moved: shares by the sign of each prompt's own estimate (noisy
    with few samples a prompt), and how many moved beyond their own 95% interval."""

    prompts: int
    moved_as_wanted: Proportion
    moved_against: Proportion
    significant_as_wanted: int  # the prompt's own 95% interval lies wholly on the wanted side
    significant_against: int  # … wholly on the other side
    expected_by_chance: float  # prompts beyond their interval on one side if no prompt moved at all

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Confirmation:
    """The search's best setting, a fresh baseline, the random-direction control and the prompting
    baseline, generated again on seeds no search row used (and, held out, on prompts the search
    never saw); the verdict rests on these numbers.

    Differences in the `SettingResult`s and `versus_*` treat the confirmation prompts as fixed
    strata ("these prompts"); `across_prompts` holds the same comparisons with prompts as the unit."""

    baseline: SettingResult
    best: SettingResult
    control: SettingResult
    versus_control: Difference  # best − control on the objective, these prompts
    samples: int  # per prompt
    control_seed: int  # the first control row's direction seed (every row has its own: additions.control_seed)
    prompts: tuple[int, ...] = ()  # indexes into the spec's prompts
    design: str = "same"  # held_out or same (design.py)
    prompting: SettingResult | None = None
    versus_prompting: Difference | None = None  # best − prompting on the objective, these prompts
    across_prompts: dict[str, Difference] = field(default_factory=dict)  # baseline, control, prompting
    prompt_effects: list[PromptEffect] = field(default_factory=list)
    heterogeneity: Heterogeneity | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "control_seed": self.control_seed,
            "design": self.design,
            "prompts": list(self.prompts),
            "baseline": self.baseline.to_dict(),
            "best": self.best.to_dict(),
            "control": self.control.to_dict(),
            "versus_control": asdict(self.versus_control),
            "prompting": self.prompting.to_dict() if self.prompting else None,
            "versus_prompting": asdict(self.versus_prompting) if self.versus_prompting else None,
            "across_prompts": {name: asdict(d) for name, d in self.across_prompts.items()},
            "heterogeneity": self.heterogeneity.to_dict() if self.heterogeneity else None,
            "prompt_effects": [effect.to_dict() for effect in self.prompt_effects],
        }


@dataclass(frozen=True)
class Verdict:
    """The run's conclusion: one of `EFFECTS`, and the sentence every note and line reads."""

    effect: str
    sentence: str
    difference: Difference | None = None  # what the verdict rests on (confirmed, or search when exploratory)
    versus_control: Difference | None = None
    scope: str | None = None  # THESE_PROMPTS or HELD_OUT_PROMPTS; None without a confirmation
    versus_prompting: str | None = None  # BEATS_PROMPTING, LIKE_PROMPTING, PROMPTING_BETTER; None: not run

    def to_dict(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "sentence": self.sentence,
            "scope": self.scope,
            "versus_prompting": self.versus_prompting,
            "difference": asdict(self.difference) if self.difference else None,
            "versus_control": asdict(self.versus_control) if self.versus_control else None,
        }


@dataclass
class ExperimentResult:
    spec: ExperimentSpec
    objective: Objective
    baseline: SettingResult
    settings: list[SettingResult]
    samples: list[Sample]
    best: SettingResult | None
    confirmation: Confirmation | None
    verdict: Verdict
    vectors: dict[str, SteeringVector]  # file stem → unscaled vector, on the CPU
    findings: list[str] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    reproducibility: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    trials_to_best: int | None = None
    study: bytes | None = None  # the bayes search's Optuna study, an SQLite file
    split: PromptSplit | None = None  # which prompts the search and the confirmation ran on

    @property
    def effect(self) -> str:
        return self.verdict.effect

    def examples(self, stage: str, setting: Setting, limit: int = 5) -> list[dict[str, Any]]:
        rows = [s for s in self.samples if s.stage == stage and s.setting == setting][:limit]
        return [
            {"prompt": s.completion.prompt, "completion": s.flagged or s.completion.text, "seed": s.completion.seed}
            for s in rows
        ]

    def to_dict(self) -> dict[str, Any]:
        confirmed = self.confirmation
        examples = {
            "baseline": self.examples(SEARCH, self.baseline.setting),
            "best": self.examples(SEARCH, self.best.setting) if self.best else [],
        }
        if confirmed is not None:
            examples["control"] = self.examples(CONFIRMATION, confirmed.control.setting)
            if confirmed.prompting is not None:
                examples["prompting"] = self.examples(CONFIRMATION, confirmed.prompting.setting)
        return {
            "schema": SCHEMA,
            "spec": self.spec.to_dict(),
            "spec_hash": self.spec.spec_hash(),
            "search": self.spec.search,
            "objective": {"metric": self.objective.metric, "score": self.objective.column,
                          "direction": self.objective.direction},
            "max_perplexity_ratio": self.spec.max_perplexity_ratio,
            "max_repetition_increase": self.spec.max_repetition_increase,
            "max_special_token_increase": self.spec.max_special_token_increase,
            "settings_tested": len(self.settings),
            "baseline": self.baseline.to_dict(),
            "settings": [s.to_dict() for s in self.settings],
            "best": self.best.to_dict() if self.best else None,
            "confirmation": confirmed.to_dict() if confirmed else None,
            "verdict": self.verdict.to_dict(),
            "prompts": self.prompts_record(),
            "trials": self.trials,
            "trials_to_best": self.trials_to_best,
            "findings": self.findings,
            "diagnostics": self.diagnostics,
            "examples": examples,
            "reproducibility": self.reproducibility,
            "warnings": self.warnings,
        }  # fmt: skip

    def prompts_record(self) -> dict[str, Any]:
        """Where the prompts came from and which stage ran on which (indexes into `spec.prompts`)."""
        split = self.split.to_dict() if self.split else {"design": "same"}
        source = self.spec.prompt_source
        return {"count": len(self.spec.prompts), **split, "source": source.to_record() if source else None}


def pick_best(settings: Sequence[SettingResult], objective: Objective) -> SettingResult | None:
    """The best setting that passed every guard, by the objective's mean (the first on ties)."""
    allowed = [s for s in settings if not s.rejected and s.mean(objective.column) is not None]
    if not allowed:
        return None
    return max(allowed, key=lambda s: objective.better(s.mean(objective.column) or 0.0))
