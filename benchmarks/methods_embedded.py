"""ActAdd against mean-difference (CAA) steering on the embedded SmolLM2-135M, same prompt, budget
and seeds; and whether `align` rescues front alignment on a prompt that starts elsewhere.

1. Methods. "I hate you because", objective VADER sentiment, fluency guard 1.5×, 20 samples × 30
   tokens per setting, a 3 × 4 grid each (12 settings), the confirmation with 40 fresh samples and
   the random-direction control: ActAdd Love − Hate at layers 4, 6, 8 × c ∈ {1, 2, 4, 8}; CAA from
   five sentiment pairs (last token) at layers 4, 6, 8 × c ∈ {0.25, 0.5, 1, 2} (its vector is added
   at every position, so the same c pushes far harder than ActAdd's front addition).
2. Align. "Honestly, I hate you because", Love − Hate at layer 6, c = 4, two seeds × 20 samples,
   with the addition at the prompt's start (the default) and aligned on "I hate".

    python benchmarks/methods_embedded.py --out benchmarks/results/methods_embedded.json
    python benchmarks/methods_embedded.py --part methods --out …   # one part; the file keeps the other's
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from actadd_notes import load_model
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.spec import parse_spec

PAIRS = [
    {"add": "I love you", "sub": "I hate you"},
    {"add": "You are wonderful", "sub": "You are terrible"},
    {"add": "This is great", "sub": "This is awful"},
    {"add": "I feel happy", "sub": "I feel sad"},
    {"add": "What a kind person", "sub": "What a cruel person"},
]
COMMON = {
    "prompts": ["I hate you because"], "samples": 20, "confirm_samples": 40, "max_new_tokens": 30, "seed": 0,
    "metrics": ["sentiment", "fluency"], "layer": [4, 6, 8],
}  # fmt: skip
METHODS = {
    "actadd": {"prompt_add": "Love", "prompt_sub": "Hate", "coeff": [1, 2, 4, 8]},
    "mean_difference": {"method": "mean_difference", "pairs": PAIRS, "coeff": [0.25, 0.5, 1, 2]},
}


def _summary(result: Any) -> dict[str, Any]:
    best, confirmed = result.best, result.confirmation
    out: dict[str, Any] = {"effect": result.effect, "findings": result.findings}
    if best is not None:
        out["best"] = best.setting.label
        out["search_difference"] = best.differences["sentiment"].estimate
    if confirmed is not None:
        diff, versus = confirmed.best.differences["sentiment"], confirmed.versus_control
        out |= {
            "confirmed_difference": [diff.estimate, diff.ci_low, diff.ci_high],
            "confirmed_perplexity_ratio": confirmed.best.perplexity_ratio,
            "control_difference": confirmed.control.differences["sentiment"].estimate,
            "control_perplexity_ratio": confirmed.control.perplexity_ratio,
            "versus_control": [versus.estimate, versus.ci_low, versus.ci_high],
        }
    out["settings"] = [
        {
            "label": s.setting.label,
            "difference": s.differences["sentiment"].estimate,
            "perplexity_ratio": s.perplexity_ratio,
            "p_holm": s.p_holm,
        }
        for s in result.settings
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--part", choices=("methods", "align", "both"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = load_model("embedded", device="cpu")
    earlier = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    report: dict[str, Any] = {"methods": earlier.get("methods", {}), "align": earlier.get("align", [])}
    if args.part in ("methods", "both"):
        report["methods"] = _methods(lm)
    if args.part in ("align", "both"):
        report["align"] = _align(lm)
    report["machine"] = f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def _methods(lm: Any) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for name, keys in METHODS.items():
        spec, _ = parse_spec(COMMON | keys)
        started = time.perf_counter()
        result = run_experiment(spec, lm)
        methods[name] = {**_summary(result), "seconds": round(time.perf_counter() - started, 1)}
        print(name, json.dumps({k: v for k, v in methods[name].items() if k != "settings"}), flush=True)
    return methods


def _align(lm: Any) -> list[dict[str, Any]]:
    rows = []
    for seed in (0, 1):
        for align in (None, "I hate"):
            keys = {"prompts": ["Honestly, I hate you because"], "samples": 20, "max_new_tokens": 30, "seed": seed,
                    "prompt_add": "Love", "prompt_sub": "Hate", "layer": 6, "coeff": 4, "confirm": False,
                    "metrics": ["sentiment", "fluency"], **({"align": align} if align else {})}  # fmt: skip
            result = run_experiment(parse_spec(keys)[0], lm)
            setting = result.settings[0]
            row = {
                "seed": seed,
                "align": align,
                "baseline": result.baseline.metrics["sentiment"].mean,
                "steered": setting.metrics["sentiment"].mean,
                "difference": [setting.differences["sentiment"].estimate, setting.differences["sentiment"].ci_low,
                               setting.differences["sentiment"].ci_high],
                "perplexity_ratio": setting.perplexity_ratio,
            }  # fmt: skip
            rows.append(row)
            print("align", json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
