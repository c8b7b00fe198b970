"""Search strategies over (layer, coeff): the paper's grid, and Bayesian optimisation.

`bayes` answers the ActAdd paper's open question (its `l` and `c` came from a grid search):
Optuna's TPE proposes settings, the fluency guard enters as constraints (perplexity
ratio ≤ max_perplexity_ratio; no loop or special tokens past their limits), and trials are
asked in rounds so each round is one batched generation job. The study lives in an SQLite file
that travels with the result, so `optuna-dashboard study.sqlite3` opens the search as Optuna saw it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from actadd_notes.experiments.evaluator import Evaluator
from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.results import PERPLEXITY_GUARD, Setting, SettingResult
from actadd_notes.experiments.spec import ExperimentSpec

ROUND_SIZE = 4  # trials per batched round: TPE still learns between rounds
ROUND_PER_WORKER = 2  # with several row runners (Ray actors), each gets this many trials a round
_RATIO = "perplexity_ratio"
_DEGENERATE = "degenerate"  # 1: the repetition or special-token guard rejected it
STUDY_NAME = "actadd-notes"


def run_grid(spec: ExperimentSpec, evaluator: Evaluator) -> list[SettingResult]:
    return evaluator.evaluate(
        [
            Setting(layer, float(coeff), offset=offset)
            for layer in spec.layers
            for coeff in spec.coeffs
            for offset in spec.offsets
        ]
    )


def run_bayes(
    spec: ExperimentSpec, evaluator: Evaluator, objective: Objective
) -> tuple[list[SettingResult], list[dict[str, Any]], int | None, bytes]:
    """TPE over the spec's ranges; returns the evaluated settings, the trial log, trials-to-best
    and the study as the bytes of an SQLite file."""
    import optuna

    with tempfile.TemporaryDirectory(prefix="actadd-study-") as folder:
        path = Path(folder) / "study.sqlite3"
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
        try:
            results, log = _search(spec, evaluator, objective, storage)
        finally:
            storage.remove_session()
            storage.engine.dispose()  # every trial is committed: the file is complete once closed
        return results, log, _trials_to_best(log, objective), path.read_bytes()


def _search(
    spec: ExperimentSpec, evaluator: Evaluator, objective: Objective, storage: Any
) -> tuple[list[SettingResult], list[dict[str, Any]]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna 5 deprecates constraints_func (a FutureWarning) for Trial.set_constraint; 4.x lacks the latter
    per_trial = hasattr(optuna.trial.Trial, "set_constraint")
    sampler = optuna.samplers.TPESampler(
        seed=spec.seed,
        n_startup_trials=min(8, max(2, (spec.trials or 20) // 3)),
        constraints_func=None
        if per_trial
        else (
            lambda trial: [
                trial.user_attrs.get(_RATIO, float("inf")) - spec.max_perplexity_ratio,
                trial.user_attrs.get(_DEGENERATE, 1.0),
            ]
        ),
        constant_liar=True,
    )
    direction: Literal["maximize", "minimize"] = "maximize" if objective.sign > 0 else "minimize"  # on the score
    study = optuna.create_study(direction=direction, sampler=sampler, storage=storage, study_name=STUDY_NAME)
    study.set_user_attr("objective", {"metric": objective.metric, "score": objective.column})
    results: list[SettingResult] = []
    log: list[dict[str, Any]] = []
    trials = spec.trials or 20
    size = round_size(evaluator.rows.parallelism)
    study.set_user_attr("round_size", size)
    while len(log) < trials:
        asked = [study.ask() for _ in range(min(size, trials - len(log)))]
        settings = [_suggest(t, spec) for t in asked]
        for trial, result in zip(asked, evaluator.evaluate(settings)):
            value = result.mean(objective.column)
            trial.set_user_attr(_RATIO, result.perplexity_ratio)
            degenerate = 1.0 if set(result.rejected_for) - {PERPLEXITY_GUARD} else 0.0  # loops, special tokens
            trial.set_user_attr(_DEGENERATE, degenerate)
            if per_trial:
                trial.set_constraint(_RATIO, result.perplexity_ratio - spec.max_perplexity_ratio)
                trial.set_constraint(_DEGENERATE, degenerate)
            if value is None:  # no finite score to report: a failed trial, not a crash
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
            results.append(result)
            log.append(
                {
                    "number": trial.number,
                    "layer": result.setting.layer,
                    "coeff": result.setting.coeff,
                    "offset": result.setting.offset,
                    "value": value,
                    _RATIO: result.perplexity_ratio,
                    "feasible": not result.rejected,
                }
            )
    return results, log


def round_size(parallelism: int) -> int:
    """Trials asked per round: enough to keep every worker busy, never fewer than `ROUND_SIZE`, so
    one process and one Ray actor search alike (more actors: larger rounds, a different search)."""
    return max(ROUND_SIZE, ROUND_PER_WORKER * parallelism)


def _suggest(trial: Any, spec: ExperimentSpec) -> Setting:
    """The trial's setting: a layer and a coefficient in their ranges, and an offset when the spec searches one."""
    assert spec.layer_range is not None and spec.coeff_range is not None
    (layer_lo, layer_hi), (coeff_lo, coeff_hi) = spec.layer_range, spec.coeff_range
    layer = trial.suggest_int("layer", layer_lo, layer_hi)
    coeff = trial.suggest_float("coeff", coeff_lo, coeff_hi, log=spec.coeff_scale == "log")
    offset = trial.suggest_int("offset", *spec.offset_range) if spec.offset_range is not None else 0
    return Setting(layer, _readable(coeff, coeff_lo, coeff_hi), offset=offset)


def _readable(coeff: float, low: float, high: float) -> float:
    """4 significant digits, kept inside [low, high]: rounding to decimals would turn a small
    log-scale coefficient into 0."""
    return min(max(float(f"{coeff:.4g}"), low), high)


def _trials_to_best(log: list[dict[str, Any]], objective: Objective) -> int | None:
    """1-based index of the first feasible trial reaching the best feasible value."""
    feasible = [t for t in log if t["feasible"] and t["value"] is not None]
    if not feasible:
        return None
    best = max(objective.better(t["value"]) for t in feasible)
    return next(
        i
        for i, t in enumerate(log, 1)
        if t["feasible"] and t["value"] is not None and objective.better(t["value"]) >= best
    )
