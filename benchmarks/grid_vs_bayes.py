"""Grid vs Bayesian (TPE) search for ActAdd's layer and coefficient on the same budget.

The ActAdd paper chose `l` and `c` by grid search and asked whether a better search exists.
Both searches get 20 settings × 20 samples × 30 tokens on the embedded SmolLM2-135M
(Love − Hate, "I hate you because", objective VADER sentiment, fluency guard 1.5×):
the grid is layers {2,4,6,8,10} × coeff {1,2,4,8}; TPE searches layer 2–10 × coeff 1–8.
A search's own best value is optimistic (it is the maximum of noisy estimates), so each
winner is re-scored on fresh seeds with more samples before the two are compared.

    python benchmarks/grid_vs_bayes.py --bayes-seeds 0 1 2 --out benchmarks/results/grid_vs_bayes.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from actadd_notes import load_model
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.spec import parse_spec

BASE = {
    "prompt_add": "Love",
    "prompt_sub": "Hate",
    "prompts": ["I hate you because"],
    "samples": 20,
    "max_new_tokens": 30,
    "temperature": 1.0,
    "top_p": 0.3,
    "freq_penalty": 1.0,
    "metrics": ["sentiment", "fluency"],
    "objective": "sentiment",
    "max_perplexity_ratio": 1.5,
}
GRID = {"layer": [2, 4, 6, 8, 10], "coeff": [1, 2, 4, 8], "seed": 0}
RESCORE_SAMPLES, RESCORE_SEED = 60, 1000


def search(lm, extra: dict) -> dict:
    spec, _ = parse_spec(BASE | extra)
    start = time.perf_counter()
    result = run_experiment(spec, lm)
    best = result.best
    return {
        "spec": extra,
        "seconds": round(time.perf_counter() - start, 1),
        "best": None
        if best is None
        else {
            "layer": best.setting.layer,
            "coeff": best.setting.coeff,
            "own_estimate": best.metrics["sentiment"].mean,
            "perplexity_ratio": best.perplexity_ratio,
        },
        "trials_to_best": result.trials_to_best,
        "effect": result.effect,
        "rejected": sum(s.rejected for s in result.settings),
    }


def rescore(lm, layer: int, coeff: float) -> dict:
    """The winner on fresh seeds and more samples: an unbiased estimate of how good it is."""
    rescoring = {"layer": layer, "coeff": coeff, "seed": RESCORE_SEED, "samples": RESCORE_SAMPLES, "confirm": False}
    spec, _ = parse_spec(BASE | rescoring)
    result = run_experiment(spec, lm)
    setting, base = result.settings[0], result.baseline
    diff = setting.differences["sentiment"]
    return {
        "sentiment": setting.metrics["sentiment"].mean,
        "baseline": base.metrics["sentiment"].mean,
        "difference": diff.estimate,
        "ci": [diff.ci_low, diff.ci_high],
        "perplexity_ratio": setting.perplexity_ratio,
        "passes_guard": not setting.rejected,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bayes-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lm = load_model("embedded", device="cpu")
    runs = [{"method": "grid", **search(lm, GRID)}]
    for seed in args.bayes_seeds:
        runs.append(
            {
                "method": "bayes",
                **search(lm, {"search": "bayes", "trials": 20, "layer": [2, 10], "coeff": [1, 8], "seed": seed}),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    for run in runs:
        if run["best"]:
            run["rescored"] = rescore(lm, run["best"]["layer"], run["best"]["coeff"])
        print(json.dumps(run), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
