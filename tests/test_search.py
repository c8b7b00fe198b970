"""Search strategies: Bayesian optimisation (Optuna TPE) on a tiny random model, and on a fake
evaluator whose scores are a known function of the setting, to test the constraint exactly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from tiny import (
    tiny_lm,
    tiny_threads,
)

from actadd_notes.experiments.metrics import PERPLEXITY, Objective
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import SEARCH, Setting, SettingResult
from actadd_notes.experiments.search import ROUND_SIZE, _trials_to_best, run_bayes
from actadd_notes.experiments.spec import estimate_work, parse_spec
from actadd_notes.experiments.stats import Summary

TRIALS = 8
COEFF = [-2, 4]


def bayes_spec(**overrides):
    properties = {
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "prompts": ["I hate you because"],
        "samples": 3,
        "max_new_tokens": 4,
        "metrics": ["profanity"],  # continuous scores even on a random model's gibberish (VADER gives 0)
        "direction": "maximize",
        "search": "bayes",
        "layer": [0, 2],
        "coeff": COEFF,
        "trials": TRIALS,
        **overrides,
    }
    spec, warnings = parse_spec(properties)
    assert warnings == []
    return spec


def trial_plan(result) -> list[tuple]:
    return [
        (t["number"], t["layer"], t["coeff"], t["value"], t["perplexity_ratio"], t["feasible"]) for t in result.trials
    ]


@pytest.fixture(scope="module")
def llama():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def bayes(llama):
    return run_experiment(bayes_spec(), llama)


# ------------------------------------------------------------------ on a tiny model
def test_bayes_with_a_fixed_seed_is_reproducible(bayes):
    again = run_experiment(bayes_spec(), tiny_lm("llama"))
    assert trial_plan(again) == trial_plan(bayes)
    assert [s.setting for s in again.settings] == [s.setting for s in bayes.settings]
    assert [s.completion for s in again.samples] == [s.completion for s in bayes.samples]
    assert again.trials_to_best == bayes.trials_to_best
    assert again.best.setting == bayes.best.setting


def test_another_seed_proposes_other_settings(bayes, llama):
    other = run_experiment(bayes_spec(seed=1), llama)
    assert [s.setting for s in other.settings] != [s.setting for s in bayes.settings]


def test_bayes_runs_the_number_of_trials_asked_with_one_baseline(bayes):
    assert len(bayes.trials) == len(bayes.settings) == TRIALS
    assert [t["number"] for t in bayes.trials] == list(range(TRIALS))
    assert bayes.baseline.setting == Setting()
    assert sum(1 for s in bayes.samples if s.setting == Setting() and s.stage == SEARCH) == 3  # one, not one per round
    for trial, setting in zip(bayes.trials, bayes.settings):
        assert (trial["layer"], trial["coeff"]) == (setting.setting.layer, setting.setting.coeff)
        assert trial["value"] == setting.mean("profanity")
        assert trial["perplexity_ratio"] == setting.perplexity_ratio
        assert trial["feasible"] is (not setting.rejected)


def test_bayes_progress_ends_at_the_total(llama):
    spec = bayes_spec()
    calls = []
    run_experiment(spec, llama, progress=lambda done, total, stage: calls.append((done, total)))
    total = estimate_work(spec).generations
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (total, total)


def test_proposals_stay_inside_the_ranges(bayes):
    for setting in bayes.settings:
        assert isinstance(setting.setting.layer, int) and 0 <= setting.setting.layer <= 2
        assert COEFF[0] <= setting.setting.coeff <= COEFF[1]


@pytest.mark.parametrize("coeff", [[0.5, 16], [1e-5, 1e-3]])
def test_log_scale_proposals_are_positive_and_inside_the_range(llama, coeff):
    result = run_experiment(bayes_spec(coeff=coeff, coeff_scale="log", trials=8), llama)
    low, high = coeff
    coeffs = [s.setting.coeff for s in result.settings]
    assert all(low <= c <= high for c in coeffs), coeffs  # rounding must not make a tiny coeff 0
    assert len(set(coeffs)) == len(coeffs)


def test_a_pinned_setting_is_scored_on_its_own_samples_each_trial(llama):
    # every trial proposes the same setting; each must be scored on its own rows, not on all of a round's
    result = run_experiment(bayes_spec(layer=1, coeff=2, trials=ROUND_SIZE + 1), llama)
    assert {s.setting for s in result.settings} == {Setting(1, 2.0)}
    for setting in result.settings:
        assert setting.metrics["profanity"].n == 3
        assert setting.metrics[PERPLEXITY].n == 3


def test_rejected_trials_are_infeasible_and_never_best(bayes):
    limit = bayes.spec.max_perplexity_ratio
    infeasible = [t for t in bayes.trials if not t["feasible"]]
    assert infeasible, "the ranges are chosen so that some trials fail the guard"
    assert all(t["perplexity_ratio"] > limit for t in infeasible)
    assert all(t["perplexity_ratio"] <= limit for t in bayes.trials if t["feasible"])
    assert bayes.best is not None and not bayes.best.rejected
    # with this seed a rejected trial scores higher than every feasible one: the guard decides
    assert max(t["value"] for t in infeasible) > bayes.best.mean("profanity")


def test_trials_to_best_points_at_the_first_best_feasible_trial(bayes):
    n = bayes.trials_to_best
    assert n is not None
    chosen = bayes.trials[n - 1]
    assert chosen["feasible"]
    assert chosen["value"] == bayes.best.mean("profanity")
    assert all(t["value"] <= chosen["value"] for t in bayes.trials if t["feasible"])
    assert all(t["value"] < chosen["value"] for t in bayes.trials[: n - 1] if t["feasible"])


# ------------------------------------------------------------------ _trials_to_best
def _t(value, feasible=True):
    return {"value": value, "feasible": feasible}


@pytest.mark.parametrize(
    ("log", "direction", "expected"),
    [
        ([_t(0.1), _t(0.9, False), _t(0.5), _t(0.5), _t(0.2)], "maximize", 3),
        ([_t(0.1), _t(-0.9, False), _t(0.5), _t(-0.2), _t(-0.2)], "minimize", 4),
        ([_t(None), _t(0.3)], "maximize", 2),
        ([_t(0.9, False), _t(None)], "maximize", None),
        ([], "maximize", None),
    ],
)
def test_trials_to_best_ignores_infeasible_trials(log, direction, expected):
    assert _trials_to_best(log, Objective("sentiment", direction)) == expected


# ------------------------------------------------------------------ a fake evaluator
class FakeEvaluator:
    """Scores a setting as its coeff, with perplexity ratio 1 + |coeff|/10: under the default guard
    (1.5) |coeff| > 5 is rejected, so the best feasible value is 5. Above `missing` the objective
    has no value (as when every score is non-finite)."""

    def __init__(self, spec, missing: float = math.inf, parallelism: int = 1, loops_above: float = math.inf):
        self.limit, self.missing, self.rounds = spec.max_perplexity_ratio, missing, []
        self.loops_above = loops_above  # settings above this coeff fail the repetition guard, not perplexity
        self.rows = SimpleNamespace(parallelism=parallelism)  # how many workers generate rows at once

    def evaluate(self, settings):
        self.rounds.append(list(settings))
        results = []
        for setting in settings:
            value = None if setting.coeff > self.missing else setting.coeff
            ratio = 1 + abs(setting.coeff) / 10
            summary = Summary(value, value, value, 0 if value is None else 1, None, 0, 0.95)
            failed = (("perplexity",) if ratio > self.limit else ()) + (
                ("repetition",) if setting.coeff > self.loops_above else ()
            )
            results.append(
                SettingResult(
                    setting, {"sentiment": summary}, perplexity_ratio=ratio, rejected=bool(failed), rejected_for=failed
                )
            )
        return results


def landscape(limit: float, trials: int = 22):
    spec = bayes_spec(layer=[0, 3], coeff=[-10, 10], trials=trials, max_perplexity_ratio=limit)
    evaluator = FakeEvaluator(spec)
    return evaluator, *run_bayes(spec, evaluator, Objective("sentiment", "maximize"))[:3]


def test_the_constraint_keeps_the_best_feasible_on_a_known_landscape():
    evaluator, results, log, to_best = landscape(1.5)
    assert [len(r) for r in evaluator.rounds] == [ROUND_SIZE] * 5 + [2]  # batched rounds, the last one short
    assert len(results) == len(log) == 22
    assert any(not t["feasible"] for t in log) and any(t["feasible"] for t in log)
    best = log[to_best - 1]
    assert best["feasible"] and best["coeff"] <= 5
    assert best["value"] == max(t["value"] for t in log if t["feasible"])
    assert max(t["value"] for t in log) > best["value"]  # an infeasible trial scored higher


def test_rounds_grow_with_the_workers_that_generate_them():
    spec = bayes_spec(layer=[0, 3], coeff=[-10, 10], trials=14)
    for workers, rounds in [(1, [4, 4, 4, 2]), (2, [4, 4, 4, 2]), (3, [6, 6, 2])]:
        evaluator = FakeEvaluator(spec, parallelism=workers)
        run_bayes(spec, evaluator, Objective("sentiment", "maximize"))
        assert [len(r) for r in evaluator.rounds] == rounds


def test_tpe_is_told_the_constraint():
    """Told that |coeff| > 5 fails, TPE proposes fewer such settings once past its random start."""
    *_, constrained, _ = landscape(1.5)
    *_, free, _ = landscape(100.0)
    assert [t["coeff"] for t in constrained[:4]] == [t["coeff"] for t in free[:4]]  # same random start
    beyond = [sum(t["coeff"] > 5 for t in log[12:]) for log in (constrained, free)]
    assert beyond[0] < beyond[1], beyond


def test_tpe_is_told_that_loops_are_infeasible_too():
    """Settings above c = 3 loop (the repetition guard) while their perplexity passes: TPE steers away."""
    spec = bayes_spec(layer=[0, 3], coeff=[-10, 10], trials=22, max_perplexity_ratio=100)
    objective = Objective("sentiment", "maximize")
    _, looping, _, _ = run_bayes(spec, FakeEvaluator(spec, loops_above=3), objective)
    _, free, _, _ = run_bayes(spec, FakeEvaluator(spec), objective)
    beyond = [sum(t["coeff"] > 3 for t in log[12:]) for log in (looping, free)]
    assert beyond[0] < beyond[1], beyond
    assert all(not t["feasible"] for t in looping if t["coeff"] > 3)


def test_a_trial_without_an_objective_value_is_logged_not_fatal():
    spec = bayes_spec(layer=[0, 3], coeff=[-10, 10], trials=8, max_perplexity_ratio=100)
    _, log, to_best, _ = run_bayes(spec, FakeEvaluator(spec, missing=0), Objective("sentiment", "maximize"))
    assert len(log) == 8
    missing = [t for t in log if t["value"] is None]
    assert missing and all(t["coeff"] > 0 for t in missing)
    assert to_best is not None and log[to_best - 1]["value"] == max(t["value"] for t in log if t["value"] is not None)


def test_the_bayes_winner_is_confirmed_on_fresh_seeds_like_a_grids(bayes):
    assert bayes.confirmation is not None and bayes.confirmation.best.setting == bayes.best.setting
    search_seeds = {s.completion.seed for s in bayes.samples if s.stage == SEARCH}
    fresh = {s.completion.seed for s in bayes.samples if s.stage != SEARCH}
    assert fresh and not fresh & search_seeds
    line = next(line for line in bayes.findings if line.startswith("Bayesian search"))
    assert f"trial {bayes.trials_to_best} of {len(bayes.trials)}; on fresh seeds that setting's Δ is" in line
    assert bayes.effect in ("detected", "not specific", "not detected")
