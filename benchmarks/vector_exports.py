"""What each control-vector export of Love − Hate (layer 6, the embedded SmolLM2-135M) does when added
at every position, the way llama.cpp adds it, measured in the tool's own `position: all` mode.

Three exports: the old one (the mean over all the ActAdd vector's positions × coeff 4, what
`vector --format gguf --coeff 4` wrote before), the new ActAdd export (content positions only, at
0.25 residual norm, the default strength) and the pairs export (`--from-pairs benchmarks/data/sentiment-pairs.md`, last
token, at 0.25 residual norm). Each at several scales; "I hate you because", `samples` completions of
20 tokens with the spec defaults' sampling, VADER sentiment against the unsteered rows (95% Welch
interval) and the perplexity ratio under the unsteered model.

    nice -n 19 python benchmarks/vector_exports.py --out benchmarks/results/vector_exports.json

With `--llama-completion BINARY`, each export is also written as a gguf file and run at scale 1 (the
old one also at 0.05) through llama.cpp on the embedded model's own GGUF (Q4_1), the same rows and
seeds, scored the same way (`experiments/llama_cpp.py`); `--part llama` runs only that part and keeps
the file's other rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from actadd_notes import load_model
from actadd_notes.experiments.exports import DEFAULT_PROMPTS, DEFAULT_STRENGTH, check_vectors, export_vectors
from actadd_notes.experiments.llama_cpp import llama_cpp_check
from actadd_notes.steering.contrast import pair_differences
from actadd_notes.steering.control_vectors import save_control_vector
from actadd_notes.steering.models import embedded_gguf
from actadd_notes.steering.vectors import ActAdd
from actadd_notes.vault.pairs import parse_pairs

LAYER = 6
PROMPTS = ["I hate you because"]
PAIRS = Path(__file__).parent / "data" / "sentiment-pairs.md"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--llama-completion", dest="binary", help="a llama-completion binary: the cross-engine rows")
    parser.add_argument("--part", choices=["all", "llama"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = load_model("embedded", device="cpu")
    actadd = lm.steering_vector(ActAdd("Love", "Hate", LAYER, 4.0))
    old = replace(actadd, vector=actadd.scaled().float().mean(dim=0, keepdim=True), coeff=1.0)
    new = export_vectors(lm, [actadd], strength=DEFAULT_STRENGTH, prompts=DEFAULT_PROMPTS)
    pairs = pair_differences(lm, parse_pairs(PAIRS.read_text(encoding="utf-8"), PAIRS.name)).vector(LAYER)
    from_pairs = export_vectors(lm, [pairs], strength=DEFAULT_STRENGTH, prompts=DEFAULT_PROMPTS)
    exports = {
        "old (mean over all positions, coeff 4)": ([old], (1.0, 0.1, 0.05)),
        "new ActAdd (content positions, 0.25 residual norm)": (new.vectors, (0.5, 1.0, 2.0)),
        "pairs (8 pairs, last token, 0.25 residual norm)": (from_pairs.vectors, (0.5, 1.0, 2.0)),
    }
    previous = json.loads(args.out.read_text()) if args.part == "llama" and args.out.exists() else {}
    rows = [r for r in previous.get("rows", []) if r.get("engine") != "llama.cpp"]
    if args.binary:
        rows += llama_rows(lm, exports, args.binary, args.samples)
    for name, (vectors, scales) in exports.items() if args.part == "all" else ():
        for scale in scales:
            started = time.perf_counter()
            check = check_vectors(lm, [v.with_coeff(scale) for v in vectors], PROMPTS, samples=args.samples)
            rows.append({
                "engine": "actadd-notes", "export": name, "scale": scale,
                "stored_norm": round(float(vectors[0].vector.norm()), 2),
                "effect": asdict(check.effect), "perplexity_ratio": round(check.perplexity_ratio, 3),
                "examples": check.examples, "wall_s": round(time.perf_counter() - started, 1),
            })  # fmt: skip
            print(name, "|", check.line(), flush=True)
    cosine = torch.nn.functional.cosine_similarity(new.vectors[0].vector, pairs.vector.float()).item()
    args.out.write_text(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads",
        "residual_norm_layer_6": new.units["residual_norm"][str(LAYER)],
        "cosine_new_actadd_vs_pairs": round(cosine, 3), "rows": rows,
    }, indent=1))  # fmt: skip


def llama_rows(lm, exports, binary: str, samples: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number, (name, (vectors, scales)) in enumerate(exports.items()):
            path = save_control_vector(Path(folder) / f"export{number}.gguf", vectors, model_hint="llama")
            for scale in [s for s in scales if s in (1.0, 0.05)]:
                started = time.perf_counter()
                check = llama_cpp_check(lm, binary, embedded_gguf(), path, PROMPTS, scale=scale, samples=samples)
                rows.append({
                    "engine": "llama.cpp", "export": name, "scale": scale, "effect": asdict(check.effect),
                    "perplexity_ratio": round(check.perplexity_ratio, 3), "examples": check.examples,
                    "wall_s": round(time.perf_counter() - started, 1),
                })  # fmt: skip
                print(name, "|", check.line(), flush=True)
    return rows


if __name__ == "__main__":
    main()
