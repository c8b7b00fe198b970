"""Acceptance: the paper's Love − Hate example on the embedded SmolLM2-135M, as a note specs it.

The example vault's spec: layers {2, 4, 6, 8, 10} × coeff {1, 2, 4, 8}, 20 samples × 30 tokens of
"I hate you because", sampled as in the paper (temperature 1, top_p 0.3, frequency penalty 1).
The best setting's sentiment CI must lie entirely above the baseline's, the effect must hold on
fresh seeds and beat a random direction of the same per-position norms (`effect: detected`), and
the fluency guard must reject the degenerate settings: at c = 8, layers 4–8 reach VADER ≈ 0.97
with text like "Love You, Love Me…" at about 2–3× the baseline's perplexity.

The run is the README's main job, `actadd-notes demo` (the session's `demo_vault` fixture,
minutes on 2 cores); these tests read the results.json and completions.csv it wrote, so the
checks hold for exactly what a user gets.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from actadd_notes.vault.notes import Note

# the session's demo run happens inside the first test that asks for it: give it room on a busy machine
pytestmark = [pytest.mark.embedded, pytest.mark.timeout(1800)]

LAYERS = [2, 4, 6, 8, 10]
COEFFS = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def love_hate(demo_vault):
    target, report = demo_vault
    (run,) = [run for run in report["runs"] if run["note"].endswith("love-hate-sweep.md")]
    run_id = Note.read(Path(run["result_note"])).properties["run_id"]
    folder = target / "Results" / "artifacts" / f"love-hate-sweep {run_id}"
    results = json.loads(
        (folder / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in results.json")
    )
    with (folder / "completions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return results, rows, folder


def by_label(results):
    return {s["label"]: s for s in results["settings"]}


def test_the_best_settings_sentiment_ci_lies_above_the_baselines(love_hate):
    results, _, _ = love_hate
    best, baseline = results["best"], results["baseline"]
    assert best is not None
    assert best["metrics"]["sentiment"]["ci_low"] > baseline["metrics"]["sentiment"]["ci_high"], results["findings"]
    assert best["differences"]["sentiment"]["ci_low"] > 0


def test_the_effect_replicates_on_fresh_seeds_and_beats_a_random_direction(love_hate):
    results, _, _ = love_hate
    confirmation, verdict = results["confirmation"], results["verdict"]
    assert verdict["effect"] == "detected", results["findings"]
    assert results["findings"][0].startswith("Effect detected: on fresh seeds")
    assert confirmation["best"]["label"] == results["best"]["label"]
    assert confirmation["best"]["differences"]["sentiment"]["ci_low"] > 0
    assert confirmation["versus_control"]["ci_low"] > 0
    # the random push of the same size does not do it
    control = confirmation["control"]["differences"]["sentiment"]
    assert control["estimate"] < confirmation["best"]["differences"]["sentiment"]["estimate"]


def test_the_fluency_guard_rejects_the_degenerate_settings(love_hate):
    results, _, _ = love_hate
    settings = by_label(results)
    assert len(settings) == len(LAYERS) * len(COEFFS)
    for label in ("L4 c8", "L6 c8", "L8 c8"):
        assert settings[label]["rejected"], (label, settings[label]["perplexity_ratio"])
    for s in results["settings"]:
        assert s["rejected"] == (s["perplexity_ratio"] > 1.5), s["label"]
    assert not results["best"]["rejected"]
    # the degenerate settings score high: rejection is what keeps them from winning
    rejected_best = max(s["metrics"]["sentiment"]["mean"] for s in results["settings"] if s["rejected"])
    assert rejected_best > results["best"]["metrics"]["sentiment"]["mean"]


def test_the_baseline_is_sampling_matched_and_the_confirmation_uses_fresh_seeds(love_hate):
    _, rows, _ = love_hate
    seeds: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for row in rows:
        seeds.setdefault((row["stage"], row["setting"]), []).append((row["prompt"], row["sample"], row["seed"]))
    baseline = seeds.pop(("search", "baseline"))
    fresh = seeds.pop(("confirmation", "baseline"))
    # confirm_samples: 60; the confirmation's best setting, control and prompting baseline
    assert len(baseline) == 20 and len(fresh) == 60 and len(seeds) == 20 + 3
    for (stage, label), setting_rows in seeds.items():
        expected = baseline if stage == "search" else fresh
        if label == "prompting":  # the same rows and seeds, with p+ said before the prompt
            assert [row[1:] for row in setting_rows] == [row[1:] for row in expected]
            assert all(mine[0] == f"Love {theirs[0]}" for mine, theirs in zip(setting_rows, expected))
        else:
            assert setting_rows == expected, label
    assert not {seed for *_, seed in baseline} & {seed for *_, seed in fresh}


def test_the_run_produces_every_artifact(love_hate):
    results, rows, folder = love_hate
    assert results["schema"] == "actadd-notes/results/v4"
    assert len(rows) == 21 * 20 + 4 * 60
    for plot in ("heatmap.png", "sentiment-vs-coeff.png", "perplexity-vs-coeff.png", "objective-vs-fluency.png"):
        assert (folder / plot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (folder / f"vector-L{results['best']['layer']}.safetensors").is_file()
    record = results["reproducibility"]
    assert record["model"] == "SmolLM2-135M-Instruct" and record["device"] == "cpu" and record["dtype"] == "float32"
    steering = [d for d in results["diagnostics"] if d["kind"] == "steering"]
    assert [d["layer"] for d in steering] == LAYERS
    # the lone space that pads "Love" to "Hate"'s two tokens dominates the vector, as the note shows
    assert all(d["vector_norms"][1] > 3 * d["vector_norms"][0] for d in steering if d["layer"] >= 4)
