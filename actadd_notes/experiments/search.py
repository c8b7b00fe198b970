"""Search strategies over (layer, coeff): the paper's grid, and Bayesian optimisation.

`bayes` answers the ActAdd paper's open question (its `l` and `c` came from a grid search):
Optuna's TPE proposes settings, the fluency guard enters as a constraint (perplexity
ratio ≤ max_perplexity_ratio), and trials are asked in rounds so each round is one
batched generation job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actadd_notes.experiments.spec import ExperimentSpec

if TYPE_CHECKING:
    from actadd_notes.experiments.runner import Evaluator, SettingResult

ROUND_SIZE = 4  # trials per batched round: TPE still learns between rounds
_RATIO = "perplexity_ratio"


def run_grid(spec: ExperimentSpec, evaluator: Evaluator) -> list[SettingResult]:
    from actadd_notes.experiments.runner import Setting

    return evaluator.evaluate([Setting(layer, float(coeff)) for layer in spec.layers for coeff in spec.coeffs])


def run_bayes(
    spec: ExperimentSpec, evaluator: Evaluator, objective: str
) -> tuple[list[SettingResult], list[dict[str, Any]], int | None]:
    """TPE over the spec's ranges; returns the evaluated settings, the trial log and trials-to-best."""
    import optuna

    from actadd_notes.experiments.runner import Setting

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna 5 deprecates constraints_func (a FutureWarning) for Trial.set_constraint; 4.x lacks the latter
    per_trial = hasattr(optuna.trial.Trial, "set_constraint")
    sampler = optuna.samplers.TPESampler(
        seed=spec.seed,
        n_startup_trials=min(8, max(2, (spec.trials or 20) // 3)),
        constraints_func=None
        if per_trial
        else (lambda trial: [trial.user_attrs.get(_RATIO, float("inf")) - spec.max_perplexity_ratio]),
        constant_liar=True,
    )
    study = optuna.create_study(direction=spec.direction, sampler=sampler)
    (layer_lo, layer_hi), (coeff_lo, coeff_hi) = spec.layer_range, spec.coeff_range
    results: list[SettingResult] = []
    log: list[dict[str, Any]] = []
    trials = spec.trials or 20
    while len(log) < trials:
        asked = [study.ask() for _ in range(min(ROUND_SIZE, trials - len(log)))]
        settings = [
            Setting(
                t.suggest_int("layer", layer_lo, layer_hi),
                _readable(
                    t.suggest_float("coeff", coeff_lo, coeff_hi, log=spec.coeff_scale == "log"), coeff_lo, coeff_hi
                ),
            )
            for t in asked
        ]
        for trial, result in zip(asked, evaluator.evaluate(settings)):
            value = result.objective(objective)
            trial.set_user_attr(_RATIO, result.perplexity_ratio)
            if per_trial:
                trial.set_constraint(_RATIO, result.perplexity_ratio - spec.max_perplexity_ratio)
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
                    "value": value,
                    _RATIO: result.perplexity_ratio,
                    "feasible": not result.rejected,
                }
            )
    return results, log, _trials_to_best(log, spec.direction)


def _readable(coeff: float, low: float, high: float) -> float:
    """4 significant digits, kept inside [low, high]: rounding to decimals would turn a small
    log-scale coefficient into 0."""
    return min(max(float(f"{coeff:.4g}"), low), high)


def _trials_to_best(log: list[dict[str, Any]], direction: str) -> int | None:
    """1-based index of the first feasible trial reaching the best feasible value."""
    feasible = [t for t in log if t["feasible"] and t["value"] is not None]
    if not feasible:
        return None
    sign = 1 if direction == "maximize" else -1
    best = max(sign * t["value"] for t in feasible)
    return next(
        i for i, t in enumerate(log, 1) if t["feasible"] and t["value"] is not None and sign * t["value"] >= best
    )
