"""How often does a run on a model that knows nothing say `detected`? The old verdict against the new.

Each run is the real pipeline (`run_experiment`) on a randomly initialised Llama whose vocabulary
is English words (a word-level tokenizer over common words of the embedded SmolLM2's vocabulary,
so VADER finds sentiment in its random text, as it does in a random 8B model's): a grid of
layers × coefficients, Love − Hate, objective sentiment, then the confirmation and the random-
direction control. Every run gets its own model seed and spec seed.

- The old verdict (before the confirmation stage): `detected` when the best setting's own search
  interval of the difference excludes 0 in the wanted direction.
- The new verdict: `result.effect`, from the confirmation on fresh seeds and the control.

It also reports the cost of the confirmation and control as a fraction of the generated rows and
of the generation time of a 20-setting grid (the confirmation is three settings: the best, a
fresh baseline and the control).

    python benchmarks/verdict_calibration.py --runs 60 --out benchmarks/results/verdict_calibration.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

import torch

from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.spec import estimate_work, parse_spec
from actadd_notes.experiments.verdict import wanted
from actadd_notes.steering.lm import SteerableLM

WORDS = 3000


def word_tokenizer():
    """A word-level tokenizer over the embedded model's commonest whole-word tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from actadd_notes.steering.models import embedded_model_dir

    smol = AutoTokenizer.from_pretrained(embedded_model_dir(), trust_remote_code=False)
    ranked = sorted(smol.get_vocab().items(), key=lambda item: item[1])
    words = [t[1:].lower() for t, _ in ranked if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 3]
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for word in dict.fromkeys([*words, "love", "hate", "i", "you", "because"]):
        if len(vocab) >= WORDS + 4:
            break
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def random_lm(tokenizer, seed: int) -> SteerableLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=96, intermediate_size=192, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return SteerableLM(LlamaForCausalLM(config).eval(), tokenizer, name=f"random-llama-96-seed{seed}")


SPEC = {
    "prompt_add": "love", "prompt_sub": "hate", "layer": [0, 1, 2, 3], "coeff": [-8, -4, -1, 1, 4],
    "prompts": ["i hate you because"], "pad_token": "the", "samples": 16, "max_new_tokens": 24,
    "metrics": ["sentiment", "fluency"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = word_tokenizer()
    runs = []
    for seed in range(args.runs):
        spec, _ = parse_spec(SPEC | {"seed": seed})
        lm = random_lm(tokenizer, seed)
        started = time.perf_counter()
        result = run_experiment(spec, lm)
        best = result.best
        runs.append({
            "seed": seed,
            "old_verdict_detected": bool(best and wanted(best.differences["sentiment"], result.objective)),
            "effect": result.effect,
            "best": best.setting.label if best else None,
            "search_difference": best.differences["sentiment"].estimate if best else None,
            "confirmed_difference": result.confirmation.best.differences["sentiment"].estimate
            if result.confirmation else None,
            "seconds": round(time.perf_counter() - started, 2),
            "confirmation_seconds": result.reproducibility.get("confirmation_wall_time_s"),
        })  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    old = sum(r["old_verdict_detected"] for r in runs)
    effects = Counter(r["effect"] for r in runs)
    estimate = estimate_work(parse_spec(SPEC)[0])
    summary = {
        "runs": len(runs),
        "old_verdict_detected": old,
        "new_verdict": dict(effects),
        "settings": len(SPEC["layer"]) * len(SPEC["coeff"]),
        "confirmation_rows_fraction": round(3 / (estimate.settings - 3), 4),
        "confirmation_time_fraction": round(
            sum(r["confirmation_seconds"] or 0 for r in runs) / sum(r["seconds"] for r in runs), 4
        ),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
