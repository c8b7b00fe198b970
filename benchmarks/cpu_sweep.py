"""CPU benchmark: the example sweep batched (one job, per-row vectors) vs one setting at a time.

The example: Love − Hate on the embedded SmolLM2-135M, layers {2,4,6,8,10} × coeff {1,2,4,8}
plus the baseline (21 settings), 20 samples × 30 tokens, top_p 0.3, freq_penalty 1.
Both modes generate the same rows with the same seeds (the sampler draws per row, so the
completions are identical) and score perplexity; the batched mode is what `run` does.

    python benchmarks/cpu_sweep.py --repeats 2 --out benchmarks/results/cpu_sweep.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from actadd_notes import ActAdd, load_model

LAYERS = (2, 4, 6, 8, 10)
COEFFS = (1.0, 2.0, 4.0, 8.0)
SAMPLES, TOKENS = 20, 30
PROMPT = "I hate you because"
SAMPLING = {"temperature": 1.0, "top_p": 0.3, "freq_penalty": 1.0}


def settings() -> list[list[ActAdd] | None]:
    return [None] + [[ActAdd("Love", "Hate", layer, coeff)] for layer in LAYERS for coeff in COEFFS]


def batched(lm, batch_size: int) -> tuple[float, list]:
    rows = [(steer, sample) for steer in settings() for sample in range(SAMPLES)]
    start = time.perf_counter()
    completions = lm.complete(
        [PROMPT] * len(rows),
        seeds=[s for _, s in rows],
        steer=[st for st, _ in rows],
        max_new_tokens=TOKENS,
        batch_size=batch_size,
        **SAMPLING,
    )
    lm.perplexities(completions, batch_size=batch_size)
    return time.perf_counter() - start, completions


def one_at_a_time(lm) -> tuple[float, list]:
    completions = []
    start = time.perf_counter()
    for steer in settings():
        batch = lm.complete(
            [PROMPT] * SAMPLES, seeds=list(range(SAMPLES)), steer=steer, max_new_tokens=TOKENS, **SAMPLING
        )
        lm.perplexities(batch)
        completions.extend(batch)
    return time.perf_counter() - start, completions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lm = load_model("embedded", device="cpu")
    lm.steering_vector(ActAdd("Love", "Hate", 2, 1.0))  # extraction once, outside the timings
    times: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    same = True
    for repeat in range(args.repeats):  # interleaved
        t_batched, a = batched(lm, args.batch_size)
        t_single, b = one_at_a_time(lm)
        times["batched"].append(t_batched)
        times["one_at_a_time"].append(t_single)
        same = same and [c.token_ids for c in a] == [c.token_ids for c in b]
        print(f"repeat {repeat}: batched {t_batched:.1f} s, one at a time {t_single:.1f} s", flush=True)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rows": len(settings()) * SAMPLES,
        "tokens_per_row": TOKENS,
        "batch_size": args.batch_size,
        "seconds": times,
        "median_batched_s": statistics.median(times["batched"]),
        "median_one_at_a_time_s": statistics.median(times["one_at_a_time"]),
        "speedup": statistics.median(times["one_at_a_time"]) / statistics.median(times["batched"]),
        "identical_completions": same,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
