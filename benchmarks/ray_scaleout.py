"""Scale-out on Ray against one process: the same spec, in-process and on 1…N actors.

For each configuration the spec runs twice through `run_experiment` (the API `actadd-notes run`
calls): cold (actors load the model on their first shard) and warm (the model kept). Reported
per configuration: the executor's start (Ray up, actors started), cold and warm wall time, new
tokens/s (warm), speed-up against one process and against one actor, and where the warm run's
time went — the sharded generation and scoring calls, and within them what the driver spends
cutting, shipping and merging shards rather than waiting for them; in one process, its scoring.
Every sharded run is compared with the in-process one: the share of rows with identical tokens,
and whether every statistic and the verdict are equal.

CPU (this machine, the embedded SmolLM2-135M, float32):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ray_scaleout.py --actors 1 2 --out benchmarks/results/ray_cpu.json
GPU (one card: one actor against one process; Llama-3-8B shape, random weights, bf16):
    python3 benchmarks/ray_scaleout.py --device cuda --make-model /tmp/m8b --tokenizer TOK --actors 1 \
        --layers 5 --coeffs 7 --samples 16 --tokens 64 --out $OUT/ray_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actadd_notes.experiments.pipeline import run_experiment  # noqa: E402
from actadd_notes.experiments.spec import parse_spec  # noqa: E402
from actadd_notes.scaleout import executor as ray_executor  # noqa: E402
from actadd_notes.scaleout.executor import RayExecutor, RaySettings  # noqa: E402
from actadd_notes.steering.models import load_model  # noqa: E402

PROMPTS = [
    "I hate you because", "You are so annoying when", "I cannot stand how", "What I dislike most about you is",
    "You always ruin", "I am so angry that", "Nobody likes it when you", "It drives me mad that you",
    "The worst thing about you is", "I will never forgive you for",
]  # fmt: skip


def make_model(folder: str, tokenizer: str) -> None:
    """A randomly initialised Llama-3-8B-shaped model in bf16, with a real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if Path(folder, "config.json").exists():
        return
    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
        torch_dtype="bfloat16",
    )  # fmt: skip
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)


def spec_for(args: argparse.Namespace, model: str):
    pool = [2, 4, 6, 8, 10, 12, 14, 16, 20, 24]
    properties = {
        "model": model,
        "dtype": args.dtype,
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "layer": pool[: args.layers],
        "coeff": [1, 2, 3, 4, 6, 8, 12][: args.coeffs],
        "prompts": PROMPTS[: args.prompts],
        "samples": args.samples,
        "confirm_samples": args.samples,
        "max_new_tokens": args.tokens,
        "metrics": ["sentiment", "fluency"],
        "seed": 0,
        "max_generations": 10**6,
    }
    return parse_spec(properties)[0]


class DriverClock:
    """Seconds the driver spends scoring itself (one process), in sharded generation and scoring calls,
    and waiting for shards within them (the rest of a sharded call is cutting, shipping and merging)."""

    FIELDS = ("scoring", "sharded_generation", "sharded_scoring", "waiting")

    def __init__(self, lm) -> None:
        self.reset()

        def timed(function, field):
            def wrapper(*a, **k):
                start = time.perf_counter()
                try:
                    return function(*a, **k)
                finally:
                    setattr(self, field, getattr(self, field) + time.perf_counter() - start)

            return wrapper

        lm.perplexities = timed(lm.perplexities, "scoring")
        rows = ray_executor.RayRows
        rows.run = timed(rows.run, "sharded_generation")
        rows.score = timed(rows.score, "sharded_scoring")
        rows._gather = timed(rows._gather, "waiting")

    def reset(self) -> None:
        for field in self.FIELDS:
            setattr(self, field, 0.0)

    def report(self) -> dict:
        sharded = self.sharded_generation + self.sharded_scoring
        return {
            "driver_scoring_s": round(self.scoring, 2),
            "sharded_generation_calls_s": round(self.sharded_generation, 2),
            "sharded_scoring_calls_s": round(self.sharded_scoring, 2),
            "driver_cut_ship_merge_s": round(sharded - self.waiting, 3),
        }


def tokens_of(result) -> int:
    return sum(len(s.completion.token_ids) for s in result.samples)


def same_numbers(a, b) -> bool:
    left, right = a.to_dict(), b.to_dict()
    left.pop("reproducibility"), right.pop("reproducibility")
    return json.dumps(left, sort_keys=True, default=str) == json.dumps(right, sort_keys=True, default=str)


def movement(a, b) -> dict:
    """How far the sharded run's search statistics moved from one process's (bf16: a shard is a
    re-draw): the largest and median change of a setting's objective mean against the median 95%
    half-width, the best setting of each, and each run's verdict."""
    column = a.objective.column
    changes, widths = [], []
    for left, right in zip(a.settings, b.settings):
        x, y = left.metrics[column], right.metrics[column]
        if x.mean is not None and y.mean is not None and x.ci_high is not None and x.ci_low is not None:
            changes.append(abs(x.mean - y.mean))
            widths.append((x.ci_high - x.ci_low) / 2)
    return {
        "largest_change_of_a_setting_mean": round(max(changes), 4) if changes else None,
        "median_change": round(statistics.median(changes), 4) if changes else None,
        "median_ci_half_width": round(statistics.median(widths), 4) if widths else None,
        "best": [r.best.setting.label if r.best else None for r in (a, b)],
        "verdict": [r.verdict.effect for r in (a, b)],
    }


def measure(spec, lm, clock: DriverClock, executor=None) -> dict:
    runs = {}
    for label in ("cold", "warm"):
        clock.reset()
        start = time.perf_counter()
        result = run_experiment(spec, lm, executor=executor)
        wall = time.perf_counter() - start
        runs[label] = {
            "wall_s": round(wall, 2),
            "new_tokens": tokens_of(result),
            "new_tokens_per_s": round(tokens_of(result) / wall, 1),
            **clock.report(),
        }
    runs["result"] = result
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--make-model", metavar="DIR")
    parser.add_argument("--tokenizer", default="embedded")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--coeffs", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    model = "embedded"
    if args.make_model:
        make_model(args.make_model, args.tokenizer)
        model = args.make_model
    spec = spec_for(args, model)
    cpus = os.cpu_count() or 1
    if args.device == "cpu":
        torch.set_num_threads(cpus)
    started = time.perf_counter()
    lm = load_model(model, device=args.device, dtype=args.dtype)
    report = {
        "machine": platform.node(),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({cpus} cores)",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "model": model,
        "driver_model_load_s": round(time.perf_counter() - started, 1),
        "rows": None,
        "configurations": {},
    }
    clock = DriverClock(lm)
    alone = measure(spec, lm, clock)
    report["rows"] = len(alone["result"].samples)
    report["configurations"]["one process"] = {k: v for k, v in alone.items() if k != "result"}
    print(json.dumps(report["configurations"]["one process"]), flush=True)
    baseline_warm = alone["warm"]["wall_s"]
    one_actor = None
    for actors in args.actors:
        gpus = 1.0 if args.device.startswith("cuda") else 0.0
        per_actor = None if gpus else max(1, cpus // actors)
        settings = RaySettings(actors=actors, gpus_per_actor=gpus, cpus_per_actor=per_actor, dtype=args.dtype)
        start = time.perf_counter()
        with RayExecutor(settings) as executor:
            up = time.perf_counter() - start
            runs = measure(spec, lm, clock, executor)
        result = runs.pop("result")
        identical = sum(
            a.completion.token_ids == b.completion.token_ids for a, b in zip(alone["result"].samples, result.samples)
        )
        warm = runs["warm"]["wall_s"]
        one_actor = one_actor or warm
        entry = {
            **runs,
            "executor_start_s": round(up, 1),
            "actor_model_load_and_first_use_s": round(runs["cold"]["wall_s"] - warm, 1),
            "speedup_vs_one_process": round(baseline_warm / warm, 2),
            "speedup_vs_one_actor": round(one_actor / warm, 2),
            "rows_identical_to_one_process": f"{identical}/{len(result.samples)}",
            "statistics_and_verdict_equal": same_numbers(alone["result"], result),
            "movement": movement(alone["result"], result),
        }
        report["configurations"][f"{actors} actor(s)"] = entry
        print(actors, json.dumps(entry), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
