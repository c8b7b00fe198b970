"""Acceptance: the paper's Love − Hate example on the embedded SmolLM2-135M, as a note would spec it.

Layers {2, 4, 6, 8, 10} × coeff {1, 2, 4, 8}, 20 samples × 30 tokens of "I hate you because",
sampled as in the paper (temperature 1, top_p 0.3, frequency penalty 1). The best setting's
sentiment CI must lie entirely above the baseline's, and the fluency guard must reject the
degenerate settings: at c = 8, layers 4–8 reach VADER ≈ 0.97 with text like "Love You, Love
Me…" at about twice the baseline's perplexity.

Slow on CPU (a few minutes: 420 completions, plus a ~25 s conversion of the model on the first
load of the test session), so the run happens once for the module.
"""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from actadd_notes.experiments.artifacts import COMPLETIONS, RESULTS, render_artifacts
from actadd_notes.experiments.runner import PERPLEXITY, run_experiment
from actadd_notes.experiments.spec import estimate_work, parse_spec
from actadd_notes.steering import load_model

pytestmark = pytest.mark.embedded

LAYERS = [2, 4, 6, 8, 10]
COEFFS = [1, 2, 4, 8]
SPEC = {
    "type": "actadd-experiment",
    "model": "embedded",
    "prompt_add": "Love",
    "prompt_sub": "Hate",
    "layer": LAYERS,
    "coeff": COEFFS,
    "prompts": ["I hate you because"],
    "samples": 20,
    "max_new_tokens": 30,
    "seed": 0,
    "temperature": 1.0,
    "top_p": 0.3,
    "freq_penalty": 1.0,
    "metrics": ["sentiment"],
    "objective": "sentiment",
    "max_perplexity_ratio": 1.5,
}


@pytest.fixture(scope="module")
def smollm(session_cache):
    # module scope runs before the per-test autouse fixture that points the cache at
    # `session_cache`, so point it there here too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTADD_NOTES_CACHE_DIR", str(session_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def love_hate(smollm):
    spec, warnings = parse_spec(SPEC)
    assert warnings == []
    started = time.perf_counter()
    result = run_experiment(spec, smollm)
    elapsed = time.perf_counter() - started
    print(f"\nLove − Hate grid on {smollm.name}: {elapsed:.0f} s for {estimate_work(spec).generations} completions")
    for s in [result.baseline, *result.settings]:
        m = s.metrics["sentiment"]
        print(f"  {s.setting.label:9} sentiment {m.mean:+.3f} [{m.ci_low:+.3f}, {m.ci_high:+.3f}]  "
              f"perplexity {s.metrics[PERPLEXITY].mean:6.2f} ({s.perplexity_ratio:.2f}×){'  rejected' if s.rejected else ''}")
    return result


def by_label(result):
    return {s.setting.label: s for s in result.settings}


def test_the_best_settings_sentiment_ci_lies_above_the_baselines(love_hate):
    best, baseline = love_hate.best, love_hate.baseline
    assert best is not None
    assert best.metrics["sentiment"].ci_low > baseline.metrics["sentiment"].ci_high, love_hate.findings
    assert best.differences["sentiment"].ci_low > 0
    assert any("excludes 0" in line for line in love_hate.findings), love_hate.findings


def test_the_fluency_guard_rejects_the_degenerate_settings(love_hate):
    settings = by_label(love_hate)
    assert len(settings) == len(LAYERS) * len(COEFFS)
    for label in ("L4 c8", "L6 c8", "L8 c8"):
        assert settings[label].rejected, (label, settings[label].perplexity_ratio)
    for s in love_hate.settings:
        assert s.rejected == (s.perplexity_ratio > 1.5), s.setting.label
    assert not love_hate.best.rejected
    # the degenerate settings score high: rejection is what keeps them from winning
    assert max(s.objective("sentiment") for s in love_hate.settings if s.rejected) > love_hate.best.objective("sentiment")


def test_the_baseline_is_sampling_matched(love_hate):
    baseline = [(s.prompt_index, s.sample, s.completion.seed) for s in love_hate.samples if s.setting.is_baseline]
    assert len(baseline) == 20
    for setting in love_hate.settings:
        rows = [(s.prompt_index, s.sample, s.completion.seed) for s in love_hate.samples if s.setting == setting.setting]
        assert rows == baseline, setting.setting.label


def test_the_run_produces_every_artifact(love_hate, smollm):
    files = render_artifacts(love_hate, smollm)
    data = json.loads(files[RESULTS], parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    assert data["schema"] == "actadd-notes/results/v1"
    assert data["best"]["label"] == love_hate.best.setting.label
    assert len(list(csv.reader(io.StringIO(files[COMPLETIONS].decode())))) == 1 + 21 * 20  # header + one row per sample
    assert {"heatmap.png", "sentiment-vs-coeff.png", "perplexity-vs-coeff.png", "objective-vs-fluency.png"} <= set(files)
    assert all(files[n].startswith(b"\x89PNG\r\n\x1a\n") for n in files if n.endswith(".png"))
    assert f"vector-L{love_hate.best.setting.layer}.safetensors" in files
    record = love_hate.reproducibility
    assert record["model"] == "SmolLM2-135M-Instruct" and record["device"] == "cpu" and record["dtype"] == "float32"
    assert [d["layer"] for d in love_hate.diagnostics] == LAYERS
