"""What steering costs per decode step, measured without GPU noise.

During KV-cached decoding a steered model runs two extra Python hooks per step: the position
hook on the top-level model and the add hook of each steered block, which returns at once
once the prompt's front positions are behind. This times exactly those calls on a tiny
model (their cost does not depend on model size), to set against a decode step's time.

    python benchmarks/hook_overhead.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny import tiny_lm

from actadd_notes import ActAdd


def per_step_seconds(lm, steer, steps: int = 64, repeats: int = 20) -> float:
    prompt = ["a b c d e f g h i j k l"] * 8
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        lm.complete(prompt, max_new_tokens=steps, steer=steer, temperature=0)
        best = min(best, time.perf_counter() - start)
    return best / steps


def main() -> None:
    torch.set_num_threads(1)
    lm = tiny_lm("llama")
    steer = ActAdd("a b", "c d", 1, 4.0)
    lm.complete(["warm up"], max_new_tokens=4, steer=steer)
    plain = per_step_seconds(lm, None)
    steered = per_step_seconds(lm, steer)
    summary = {
        "tiny_model_step_plain_ms": round(plain * 1e3, 3),
        "tiny_model_step_steered_ms": round(steered * 1e3, 3),
        "steering_overhead_per_step_us": round((steered - plain) * 1e6, 1),
        "note": "best of 20 runs of 8 rows x 64 greedy steps on a 3-layer model, 1 CPU thread",
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
