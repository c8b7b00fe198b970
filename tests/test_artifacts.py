"""Artifacts of a run on a tiny random model: results.json, completions.csv, settings.csv, PNG
plots, the steering vectors and a Bayesian search's Optuna study, all as bytes."""

from __future__ import annotations

import copy
import csv
import io
import json
import math

import matplotlib.image
import pytest
import torch
from tiny import (
    tiny_lm,
    tiny_threads,
)

from actadd_notes.experiments.artifacts import COMPLETIONS, RESULTS, SETTINGS, STUDY, render_artifacts
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import SCHEMA
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.steering import ActAdd, SteeringVector

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROMPTS = ["I hate you because", "The weather today is nice and"]
EXTRA = {"add": "Happy people", "sub": "Sad", "layer": 1, "coeff": 0.5}

# every score of the `grid` fixture's rows: the guard's three, its metrics and their rates
GRID_SCORES = {
    "perplexity",
    "repetition",
    "special_tokens",
    "sentiment",
    "profanity",
    "kl",
    "positive_rate",
    "profane_rate",
}


def spec_of(**overrides):
    properties = {
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "layer": [0, 2],
        "coeff": [0.5, 1, 8],
        "prompts": PROMPTS,
        "samples": 2,
        "max_new_tokens": 5,
        "metrics": ["sentiment", "profanity", "kl"],
        **overrides,
    }
    return parse_spec(properties)[0]


def strict_json(data: bytes):
    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")

    return json.loads(data, parse_constant=refuse)


def pngs(files: dict[str, bytes]) -> set[str]:
    return {name for name in files if name.endswith(".png")}


def check_png(name: str, data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE), name
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


@pytest.fixture(scope="module")
def llama():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def grid(llama):
    return run_experiment(spec_of(extra_additions=[EXTRA]), llama)


@pytest.fixture(scope="module")
def grid_files(grid):
    return render_artifacts(grid)


@pytest.fixture(scope="module")
def bayes(llama):
    return run_experiment(
        spec_of(search="bayes", layer=[0, 2], coeff=[-2, 4], trials=8, metrics=["profanity"], samples=3), llama
    )


# ------------------------------------------------------------------ results.json
def test_results_json_is_versioned_strict_json(grid, grid_files):
    data = strict_json(grid_files[RESULTS])
    assert data["schema"] == SCHEMA == "actadd-notes/results/v4"
    assert data["spec_hash"] == grid.spec.spec_hash()
    assert data["search"] == "grid"
    assert data["objective"] == {"metric": "sentiment", "score": "sentiment", "direction": "maximize"}
    assert data["settings_tested"] == len(grid.settings) == 6
    assert data["verdict"]["effect"] == grid.effect and data["verdict"]["sentence"] == grid.findings[0]
    assert data["max_perplexity_ratio"] == 1.5
    assert parse_spec(data["spec"])[0] == grid.spec  # the spec reads back


def test_results_json_holds_baseline_settings_cis_and_findings(grid, grid_files):
    data = strict_json(grid_files[RESULTS])
    assert data["baseline"]["label"] == "baseline" and data["baseline"]["layer"] is None
    assert [(s["layer"], s["coeff"]) for s in data["settings"]] == [
        (s.setting.layer, s.setting.coeff) for s in grid.settings
    ]
    for setting in data["settings"]:
        assert set(setting["metrics"]) == GRID_SCORES
        for summary in setting["metrics"].values():
            assert {"mean", "ci_low", "ci_high", "n"} <= set(summary)
        assert setting["differences"]["sentiment"]["method"] == "stratified"  # two prompts: fixed strata
        assert isinstance(setting["rejected"], bool)
        assert setting["p_holm"] is None or 0 <= setting["p_holm"] <= 1
    assert data["best"]["label"] == grid.best.setting.label
    assert data["findings"] == grid.findings and data["findings"]
    assert data["examples"]["baseline"] and data["examples"]["best"]
    assert data["reproducibility"]["weights_fingerprint"] == grid.reproducibility["weights_fingerprint"]
    diagnostics = data["diagnostics"]
    layer = grid.best.setting.layer
    assert [(d["kind"], d["prompt_add"], d["layer"]) for d in diagnostics] == [
        ("steering", "Love", 0),
        ("steering", "Love", 2),
        ("extra", "Happy people", 1),
        ("control", "random direction", layer),
    ]
    steering = next(d for d in diagnostics if d["kind"] == "steering" and d["layer"] == layer)
    assert diagnostics[-1]["vector_norms"] == pytest.approx(steering["vector_norms"], abs=0.02)  # same norms
    confirmation = data["confirmation"]
    assert confirmation["best"]["label"] == grid.best.setting.label
    assert (
        confirmation["control"]["label"] == f"control {grid.best.setting.label}" and confirmation["control"]["control"]
    )
    assert confirmation["samples"] == 2 and isinstance(confirmation["control_seed"], int)
    assert all(len(d["vector_norms"]) == len(d["tokens_add"]) for d in diagnostics)


def test_non_finite_numbers_are_written_as_null(grid, llama):
    broken = copy.deepcopy(grid)
    broken.settings[-1].perplexity_ratio = math.inf
    broken.settings[-1].rejected = True
    broken.diagnostics.append({"note": math.nan})
    files = render_artifacts(broken)
    data = strict_json(files[RESULTS])
    assert data["settings"][-1]["perplexity_ratio"] is None
    assert data["diagnostics"][-1] == {"note": None}
    for name in pngs(files):
        check_png(name, files[name])


# ------------------------------------------------------------------ completions.csv
def test_completions_csv_has_one_row_per_sample(grid, grid_files):
    rows = list(csv.reader(io.StringIO(grid_files[COMPLETIONS].decode())))
    header, body = rows[0], rows[1:]
    assert header == [
        "stage",
        "setting",
        "layer",
        "coeff",
        "prompt",
        "sample",
        "seed",
        "completion",
        "perplexity",
        "repetition",
        "special_tokens",
        "sentiment",
        "profanity",
        "positive_rate",
        "profane_rate",
    ]
    assert len(body) == len(grid.samples) == (len(grid.settings) + 1 + 4) * len(PROMPTS) * 2
    for row, sample in zip(body, grid.samples):
        record = dict(zip(header, row))
        assert (record["stage"], record["setting"]) == (sample.stage, sample.setting.label)
        assert record["prompt"] == sample.completion.prompt
        assert record["completion"] == sample.completion.text  # csv quoting keeps newlines and commas
        assert int(record["seed"]) == sample.completion.seed
        assert float(record["sentiment"]) == pytest.approx(sample.scores["sentiment"], abs=1e-6)
        if math.isfinite(sample.scores["perplexity"]):
            assert float(record["perplexity"]) == pytest.approx(sample.scores["perplexity"], rel=1e-5)
        else:
            assert record["perplexity"] == ""
    baseline = [dict(zip(header, r)) for r in body if r[1] == "baseline"]
    assert {(r["layer"], r["coeff"]) for r in baseline} == {("", "")}


# ------------------------------------------------------------------ plots
def test_a_grid_gets_a_heatmap_metric_plots_and_objective_vs_fluency(grid_files):
    assert pngs(grid_files) == {
        "heatmap.png",
        "sentiment-vs-coeff.png",
        "perplexity-vs-coeff.png",
        "profanity-vs-coeff.png",
        "kl-vs-coeff.png",
        "objective-vs-fluency.png",
        "per-prompt.png",
    }
    for name in pngs(grid_files):
        check_png(name, grid_files[name])


def test_only_bayes_gets_the_trial_history(bayes, grid_files):
    assert "trials.png" not in grid_files
    files = render_artifacts(bayes)
    assert "trials.png" in files and "heatmap.png" not in files
    assert pngs(files) == {
        "trials.png",
        "profanity-vs-coeff.png",
        "perplexity-vs-coeff.png",
        "objective-vs-fluency.png",
        "per-prompt.png",
    }
    for name in pngs(files):
        check_png(name, files[name])
    data = strict_json(files[RESULTS])
    assert len(data["trials"]) == 8 and data["trials_to_best"] == bayes.trials_to_best


def test_a_trial_without_a_value_still_plots(bayes):
    from actadd_notes.experiments.artifacts import plots

    broken = copy.deepcopy(bayes)
    broken.trials[0]["value"] = None
    check_png("trials.png", plots(broken)["trials.png"])


def test_a_single_setting_gets_no_heatmap(llama):
    result = run_experiment(spec_of(layer=2, coeff=1, metrics=["sentiment"]), llama)
    files = render_artifacts(result)
    assert pngs(files) == {
        "sentiment-vs-coeff.png",
        "perplexity-vs-coeff.png",
        "objective-vs-fluency.png",
        "per-prompt.png",
    }


def test_rendering_is_deterministic(grid, grid_files):
    again = render_artifacts(grid)
    assert again.keys() == grid_files.keys()
    # safetensors files are left out: their header's key order may change from one save to the next
    assert {n: b for n, b in again.items() if not n.endswith(".safetensors")} == {
        n: b for n, b in grid_files.items() if not n.endswith(".safetensors")
    }


# ------------------------------------------------------------------ vectors
def test_vectors_are_saved_with_provenance(grid, grid_files, llama, tmp_path):
    layer = grid.best.setting.layer
    assert {n for n in grid_files if n.endswith(".safetensors")} == {
        f"vector-L{layer}.safetensors",
        "vector-extra1-L1.safetensors",
        "control.safetensors",
    }
    for name, (add, sub, at) in {
        f"vector-L{layer}.safetensors": ("Love", "Hate", layer),
        "vector-extra1-L1.safetensors": ("Happy people", "Sad", 1),
    }.items():
        (tmp_path / name).write_bytes(grid_files[name])
        saved = SteeringVector.load(tmp_path / name)
        assert (saved.prompt_add, saved.prompt_sub, saved.layer, saved.coeff) == (add, sub, at, 1.0)  # unscaled
        assert saved.provenance["model"] == "tiny-llama"
        assert saved.provenance["weights_fingerprint"] == llama.fingerprint()
        expected = llama.steering_vector(ActAdd(add, sub, at))
        assert torch.equal(saved.vector, expected.vector)
        assert (saved.add_ids, saved.sub_ids) == (expected.add_ids, expected.sub_ids)


def test_the_control_vector_keeps_the_norms_and_records_its_seed(grid, grid_files, llama, tmp_path):
    (tmp_path / "control.safetensors").write_bytes(grid_files["control.safetensors"])
    control = SteeringVector.load(tmp_path / "control.safetensors")
    vector = llama.steering_vector(ActAdd("Love", "Hate", grid.best.setting.layer))
    assert control.layer == vector.layer and control.prompt_add == "random direction"
    assert torch.allclose(control.vector.norm(dim=-1), vector.vector.norm(dim=-1), rtol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(control.vector, vector.vector, dim=-1)
    assert cosine.abs().max() < 0.9  # another direction
    assert int(control.provenance["control_seed"]) == grid.confirmation.control_seed


def test_no_best_setting_means_no_vectors(llama):
    nothing = run_experiment(spec_of(layer=0, coeff=[1, 8], max_perplexity_ratio=1.0), llama)
    assert nothing.best is None
    files = render_artifacts(nothing)
    assert not [n for n in files if n.endswith(".safetensors")]
    assert strict_json(files[RESULTS])["best"] is None and strict_json(files[RESULTS])["confirmation"] is None


# ------------------------------------------------------------------ settings.csv (tidy)
def test_settings_csv_is_one_row_per_stage_setting_and_score(grid, grid_files):
    rows = list(csv.DictReader(io.StringIO(grid_files[SETTINGS].decode())))
    scores = GRID_SCORES
    assert len(rows) == (1 + len(grid.settings) + 4) * len(scores)
    assert {r["effect"] for r in rows} == {grid.effect}
    search = [r for r in rows if r["stage"] == "search" and r["score"] == "sentiment"]
    assert [r["setting"] for r in search] == ["baseline"] + [s.setting.label for s in grid.settings]
    for row, setting in zip(search[1:], grid.settings):
        assert float(row["mean"]) == pytest.approx(setting.metrics["sentiment"].mean, abs=1e-5)
        assert row["is_objective"] == "True"
        assert (row["p_holm"] == "") == (setting.p_holm is None)
    best = [r for r in rows if r["is_best"] == "True"]
    assert {r["stage"] for r in best} == {"search", "confirmation"} and {r["setting"] for r in best} == {
        grid.best.setting.label
    }
    control = [r for r in rows if r["control"] == "True"]
    assert {r["stage"] for r in control} == {"confirmation"} and len(control) == len(scores)


def test_settings_csv_loads_into_pandas_as_the_readme_shows(grid_files, tmp_path):
    pandas = pytest.importorskip("pandas")
    (tmp_path / "settings.csv").write_bytes(grid_files[SETTINGS])
    table = pandas.read_csv(tmp_path / "settings.csv")
    objective = table[(table.stage == "search") & table.is_objective]
    assert len(objective) == 7 and objective["mean"].dtype.kind == "f"


# ------------------------------------------------------------------ the Optuna study
def test_a_bayes_run_ships_its_optuna_study_which_optuna_loads_back(bayes, tmp_path):
    import optuna

    files = render_artifacts(bayes)
    assert STUDY not in render_artifacts(run_experiment(spec_of(layer=2, coeff=1, metrics=["sentiment"]), tiny_lm()))
    (tmp_path / STUDY).write_bytes(files[STUDY])
    study = optuna.load_study(study_name="actadd-notes", storage=f"sqlite:///{tmp_path / STUDY}")
    trials = study.get_trials()
    assert len(trials) == len(bayes.trials) == 8
    assert [(t.params["layer"], t.value) for t in trials] == [(t["layer"], t["value"]) for t in bayes.trials]
    assert [t.user_attrs["perplexity_ratio"] for t in trials] == [t["perplexity_ratio"] for t in bayes.trials]
    assert study.user_attrs["objective"] == {"metric": "profanity", "score": "profanity"}
