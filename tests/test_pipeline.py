"""The experiment pipeline on tiny random models (tests/tiny.py) with the real VADER metric.

What is checked is the science the pipeline promises, not the numbers a random model produces:
a sampling-matched baseline (same prompts, seeds and sampling; coeff 0 reproduces it token for
token), a CI and a difference to the baseline for every metric, the fluency guard, progress and
cancellation between batches, reproducibility, and findings that admit an absent effect.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import transformers
from tiny import (
    N_LAYERS,
    hook_count,
    tiny_lm,
    tiny_threads,
)

from actadd_notes.errors import Cancelled, SpecError
from actadd_notes.experiments.degeneration import REPETITION, SPECIAL_TOKENS
from actadd_notes.experiments.metrics import PERPLEXITY, Objective
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import SEARCH, Setting, SettingResult, pick_best
from actadd_notes.experiments.spec import estimate_work, parse_spec
from actadd_notes.experiments.stats import Difference, Summary
from actadd_notes.steering import ActAdd

# prompts of different lengths, so batches are left-padded
PROMPTS = ["I hate you because", "The weather today is nice and"]
SAMPLES = 3
TOKENS = 6
LAYERS = [0, 2]
COEFFS = [0, 1, 8]  # on the tiny llama, L0 c1 and L0 c8 fail the fluency guard


def spec_of(**overrides):
    properties = {
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "layer": LAYERS,
        "coeff": COEFFS,
        "prompts": PROMPTS,
        "samples": SAMPLES,
        "max_new_tokens": TOKENS,
        "metrics": ["sentiment", "kl"],
        **overrides,
    }
    spec, warnings = parse_spec(properties)
    assert warnings == []
    return spec


def rows_of(result, setting: Setting, stage: str = SEARCH) -> list:
    return [s for s in result.samples if s.setting == setting and s.stage == stage]


def without_wall_time(data: dict) -> dict:
    """The record without its timings (wall_time_s, confirmation_wall_time_s): they are no result."""
    record = data["reproducibility"]
    return {**data, "reproducibility": {k: v for k, v in record.items() if not k.endswith("wall_time_s")}}


@pytest.fixture(scope="module")
def llama():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def grid(llama):
    return run_experiment(spec_of(), llama)


# ------------------------------------------------------------------ shape of a grid result
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_grid_gives_a_baseline_and_one_result_per_setting_with_cis(family, llama):
    lm = llama if family == "llama" else tiny_lm("gpt2")
    result = run_experiment(spec_of(), lm)

    assert result.baseline.setting == Setting()
    assert [s.setting for s in result.settings] == [Setting(l, float(c)) for l in LAYERS for c in COEFFS]
    n = len(PROMPTS) * SAMPLES
    for setting in [result.baseline, *result.settings]:
        assert set(setting.metrics) == {PERPLEXITY, REPETITION, SPECIAL_TOKENS, "sentiment", "positive_rate", "kl"}
        for name, summary in setting.metrics.items():
            assert isinstance(summary, Summary)
            assert summary.n == (len(PROMPTS) if name == "kl" else n), name  # kl: one per prompt
            assert summary.mean is not None and summary.ci_low is not None
            assert summary.ci_low <= summary.mean <= summary.ci_high
    assert result.baseline.differences == {}
    for setting in result.settings:
        assert set(setting.differences) == set(setting.metrics)
        for name, diff in setting.differences.items():
            assert isinstance(diff, Difference)
            assert diff.estimate == pytest.approx(setting.metrics[name].mean - result.baseline.metrics[name].mean)
            assert diff.n_baseline == result.baseline.metrics[name].n
        assert setting.perplexity_ratio == pytest.approx(
            setting.metrics[PERPLEXITY].mean / result.baseline.metrics[PERPLEXITY].mean
        )
    assert len([s for s in result.samples if s.stage == SEARCH]) == (len(result.settings) + 1) * n
    assert len(result.samples) == (len(result.settings) + 1 + 4) * n  # and the confirmation's four settings
    assert hook_count(lm.model) == 0


def test_the_baseline_uses_the_same_prompts_and_seeds_as_every_setting(grid):
    def plan(setting):
        return [(s.prompt_index, s.sample, s.completion.prompt, s.completion.seed) for s in rows_of(grid, setting)]

    baseline = plan(Setting())
    assert len(baseline) == len(PROMPTS) * SAMPLES
    assert len({seed for *_, seed in baseline}) == len(baseline)  # every row its own seed
    assert [prompt for _, _, prompt, _ in baseline] == [p for p in PROMPTS for _ in range(SAMPLES)]
    for setting in grid.settings:
        assert plan(setting.setting) == baseline, setting.setting.label


def test_coeff_0_reproduces_the_baseline_token_for_token(grid):
    baseline = [s.completion for s in rows_of(grid, Setting())]
    for layer in LAYERS:
        zero = [s.completion for s in rows_of(grid, Setting(layer, 0.0))]
        assert [c.token_ids for c in zero] == [c.token_ids for c in baseline], f"layer {layer}"
        steered = [s.completion for s in rows_of(grid, Setting(layer, 8.0))]
        assert [c.token_ids for c in steered] != [c.token_ids for c in baseline]  # steering does act
    zero_setting = next(s for s in grid.settings if s.setting == Setting(LAYERS[0], 0.0))
    assert zero_setting.perplexity_ratio == pytest.approx(1.0)
    assert zero_setting.differences["sentiment"].estimate == pytest.approx(0.0)


def test_extra_additions_steer_every_setting_but_never_the_baseline(llama):
    extra = {"add": "Happy people", "sub": "Sad", "layer": 1, "coeff": 8}
    result = run_experiment(spec_of(layer=0, coeff=0, extra_additions=[extra]), llama)
    baseline = [s.completion.token_ids for s in rows_of(result, Setting())]
    assert [s.completion.token_ids for s in rows_of(result, Setting(0, 0.0))] != baseline


def test_running_the_same_spec_twice_gives_identical_results(grid):
    again = run_experiment(spec_of(), tiny_lm("llama"))  # a fresh build: nothing carried over in the model
    assert without_wall_time(again.to_dict()) == without_wall_time(grid.to_dict())
    assert [s.completion for s in again.samples] == [s.completion for s in grid.samples]
    assert [s.scores for s in again.samples] == [s.scores for s in grid.samples]


def test_batch_size_does_not_change_the_completions(grid, llama):
    small = run_experiment(spec_of(batch_size=3), llama)
    assert [s.completion for s in small.samples] == [s.completion for s in grid.samples]
    for a, b in zip(small.settings, grid.settings):
        assert a.metrics["sentiment"] == b.metrics["sentiment"]
        assert a.metrics[PERPLEXITY].mean == pytest.approx(b.metrics[PERPLEXITY].mean, rel=1e-5)


# ------------------------------------------------------------------ fluency guard
def test_the_fluency_guard_rejects_settings_above_the_perplexity_ratio(grid):
    limit = grid.spec.max_perplexity_ratio
    rejected = [s for s in grid.settings if s.rejected]
    assert rejected, "the spec is chosen so that some settings fail the guard"
    assert len(rejected) < len(grid.settings)
    for setting in grid.settings:
        assert setting.rejected == (setting.perplexity_ratio > limit), setting.setting.label
    assert grid.best is not None and not grid.best.rejected
    assert grid.best is pick_best(grid.settings, Objective("sentiment", "maximize"))


@pytest.mark.parametrize("limit", [1.0, 2.0, 1000.0])
def test_a_stricter_or_looser_guard_moves_the_line(llama, grid, limit):
    result = run_experiment(spec_of(max_perplexity_ratio=limit), llama)
    for setting in result.settings:
        assert setting.rejected == (setting.perplexity_ratio > limit)
    if limit == 1000.0:
        assert not any(s.rejected for s in result.settings)


def _setting(layer, coeff, mean, ratio, limit=1.5):
    summary = Summary(mean, mean, mean, 1, None, 0, 0.95)
    return SettingResult(Setting(layer, coeff), {"sentiment": summary}, perplexity_ratio=ratio, rejected=ratio > limit)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_pick_best_never_returns_a_rejected_setting(direction):
    settings = [
        _setting(0, 1.0, 0.2, 1.1),
        _setting(1, 8.0, 0.99, 9.0),
        _setting(1, -8.0, -0.99, 9.0),
        _setting(2, 2.0, -0.1, 1.4),
    ]
    best = pick_best(settings, Objective("sentiment", direction))
    assert best is settings[0 if direction == "maximize" else 3]
    assert pick_best([s for s in settings if s.rejected], Objective("sentiment", direction)) is None


def test_when_every_setting_is_rejected_there_is_no_best_and_the_findings_say_so(llama):
    result = run_experiment(spec_of(layer=0, coeff=[1, 8], max_perplexity_ratio=1.0), llama)
    assert all(s.rejected for s in result.settings)
    assert result.best is None
    assert result.findings[0] == "No setting passed the fluency guard: there is no best setting and no effect."
    assert result.effect == "none" and result.confirmation is None


def test_fluency_as_the_objective_picks_the_lowest_perplexity(llama):
    result = run_experiment(spec_of(layer=[0, 2], coeff=[0, 1], objective="fluency", max_perplexity_ratio=10), llama)
    assert result.spec.direction == "maximize"  # the metric's own direction: most fluent
    assert result.objective.column == PERPLEXITY
    lowest = min(result.settings, key=lambda s: s.metrics[PERPLEXITY].mean)
    assert result.best is lowest
    assert max(result.settings, key=lambda s: s.metrics[PERPLEXITY].mean) is not lowest


def test_fluency_alone_is_a_valid_spec_whose_objective_is_fluency(llama):
    result = run_experiment(spec_of(metrics=["fluency"], layer=2, coeff=[0, 1], max_perplexity_ratio=10), llama)
    assert result.spec.objective == "fluency" and result.objective.column == PERPLEXITY
    assert result.best is min(result.settings, key=lambda s: s.metrics[PERPLEXITY].mean)
    assert result.effect in ("detected", "not specific", "not detected")


# ------------------------------------------------------------------ progress and cancellation
def test_progress_counts_up_to_the_total(llama):
    spec = spec_of(batch_size=4)
    calls = []
    run_experiment(spec, llama, progress=lambda done, total, stage: calls.append((done, total, stage)))
    total = estimate_work(spec).generations
    assert len(calls) > 2
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and done[0] > 0
    assert {t for _, t, _ in calls} == {total}
    assert calls[-1][:2] == (total, total)
    assert {stage for *_, stage in calls} == {"generating", "scoring"}
    # the search's rows first, then the confirmation's four settings (best, baseline, control, prompting)
    search = (len(LAYERS) * len(COEFFS) + 1) * len(PROMPTS) * SAMPLES
    assert total == search + 4 * len(PROMPTS) * SAMPLES
    assert (search, total, "scoring") in calls


def test_cancelling_stops_between_batches(llama):
    spec = spec_of(batch_size=4)
    asked, calls = [], []

    def cancelled():
        asked.append(True)
        return len(asked) >= 2  # let one batch through, stop after the second

    with pytest.raises(Cancelled):
        run_experiment(spec, llama, progress=lambda d, t, s: calls.append(d), cancelled=cancelled)
    assert calls == [4]  # the first batch reported, then nothing: the run stopped before scoring
    assert hook_count(llama.model) == 0


def test_cancelled_from_the_start_raises_cancelled(llama):
    with pytest.raises(Cancelled):
        run_experiment(spec_of(), llama, cancelled=lambda: True)


# ------------------------------------------------------------------ kl
def test_kl_is_zero_for_the_baseline_and_positive_when_steered(grid):
    kl = grid.baseline.metrics["kl"]
    assert (kl.mean, kl.ci_low, kl.ci_high) == (0.0, 0.0, 0.0)
    for setting in grid.settings:
        if setting.setting.coeff == 0:
            assert setting.metrics["kl"].mean == pytest.approx(0.0, abs=1e-6)
        else:
            assert setting.metrics["kl"].mean > 0.01, setting.setting.label


# ------------------------------------------------------------------ findings
def test_no_detectable_effect_is_said_plainly(llama):
    result = run_experiment(spec_of(coeff=[0.001, 0.002]), llama)  # too small to move anything
    for setting in result.settings:
        diff = setting.differences["sentiment"]
        assert diff.ci_low <= 0 <= diff.ci_high
    assert result.best is not None
    assert result.effect == "not detected"
    assert result.findings[0].startswith("No effect detected"), result.findings


def test_findings_list_the_rejected_settings(grid):
    rejected = [s.setting.label for s in grid.settings if s.rejected]
    line = next(line for line in grid.findings if "failed the fluency guard" in line)
    assert line.startswith(f"{len(rejected)} of {len(grid.settings)} settings")
    for label in rejected:
        assert label in line
    for label in (s.setting.label for s in grid.settings if not s.rejected):
        assert f" {label}," not in line and f" {label};" not in line
    assert any(line.startswith("Search (grid, 6 setting(s) tested") for line in grid.findings)


# ------------------------------------------------------------------ bad layers, diagnostics, record
@pytest.mark.parametrize(
    "properties", [{"layer": [1, N_LAYERS]}, {"layer": [0, 7], "search": "bayes", "coeff": [1, 2]}]
)
def test_a_layer_the_model_lacks_is_refused_naming_the_valid_range(llama, properties):
    with pytest.raises(SpecError) as caught:
        run_experiment(spec_of(**properties), llama, note="Experiments/love.md")
    error = caught.value
    assert error.key == "layer"
    assert str(error).startswith("Experiments/love.md: layer: ")
    assert f"tiny-llama has layers 0–{N_LAYERS - 1}" in str(error)


def test_a_bad_extra_addition_layer_is_refused(llama):
    extra = {"add": "Happy", "sub": "Sad", "layer": 9, "coeff": 1}
    with pytest.raises(SpecError, match=r"extra_additions: item 1: layer 9 — tiny-llama has layers 0–2"):
        run_experiment(spec_of(extra_additions=[extra]), llama)


def test_a_run_too_large_is_refused_before_generating(llama):
    with pytest.raises(SpecError, match="max_generations"):
        run_experiment(spec_of(max_generations=10), llama, cancelled=lambda: pytest.fail("generated"))


def test_vector_diagnostics_give_per_position_norms_for_every_layer(grid, llama):
    steering = [row for row in grid.diagnostics if row["kind"] == "steering"]
    assert [row["layer"] for row in steering] == LAYERS
    for row in steering:
        vector = llama.steering_vector(ActAdd("Love", "Hate", row["layer"]))
        assert len(row["vector_norms"]) == vector.positions == len(row["tokens_add"]) == len(row["tokens_sub"])
        assert row["vector_norms"] == [round(float(x), 2) for x in vector.vector.norm(dim=-1)]
        assert row["residual_norm_first_position"] > 0 and row["residual_norm_typical"] > 0
        assert "␣" in row["tokens_add"]  # "Love" is padded with a space to the length of "H"+"ate": visible


def test_the_reproducibility_record(grid, llama):
    record = grid.reproducibility
    assert record["seed"] == 0
    assert record["spec_hash"] == grid.spec.spec_hash()
    assert record["torch"] == torch.__version__
    assert record["transformers"] == transformers.__version__
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    assert record["weights_fingerprint"] == llama.fingerprint()
    assert record["model"] == "tiny-llama"
    assert isinstance(record["wall_time_s"], float) and record["wall_time_s"] >= 0
    assert {"python", "platform", "actadd_notes"} <= set(record)


def test_provenance_given_by_the_caller_is_kept(llama):
    result = run_experiment(
        spec_of(layer=0, coeff=1), llama, provenance={"spec_note": "Experiments/love.md", "empty": ""}
    )
    assert result.reproducibility["spec_note"] == "Experiments/love.md"
    assert "empty" not in result.reproducibility


def test_seed_changes_the_samples_but_not_the_plan(grid, llama):
    other = run_experiment(replace(spec_of(), seed=1), llama)
    assert [s.completion.seed for s in other.samples] != [s.completion.seed for s in grid.samples]
    assert [(s.setting, s.prompt_index, s.sample) for s in other.samples] == [
        (s.setting, s.prompt_index, s.sample) for s in grid.samples
    ]
    assert math.isfinite(other.baseline.metrics[PERPLEXITY].mean)
