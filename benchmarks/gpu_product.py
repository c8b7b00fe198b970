"""Time the product: `actadd-notes run` of issue 8's sweep on a random-init Llama-3-8B shape in a local folder.

The model is the Llama-3-8B layout with the embedded SmolLM2 tokenizer (so every token it can emit
decodes), randomly initialised in bf16 and saved with `save_pretrained`; the spec note is 5 layers x 7
coefficients x 16 samples x 64 tokens of one prompt, plus the baseline (576 rows), metrics sentiment
and fluency; `--runs` without the confirmation stage (the sweep alone, as issue 8 measured it) and
`--confirmed-runs` with it (the product's default). Each `run` is a fresh process, timed from outside (wall) and from
inside: a child mode wraps the job's model loader and `SteerableLM.complete` / `perplexities` to
stamp when each phase starts and ends.

Device:  PYTHONPATH=.:/tmp/site python3 benchmarks/gpu_product.py --tokenizer build/gpu_carry/smollm2-tokenizer
CPU dry run:  .venv/bin/python benchmarks/gpu_product.py --tiny --tokenizer <a tokenizer folder>
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """---
type: actadd-experiment
status: queued
model: {model}
prompt_add: Love
prompt_sub: Hate
layer: {layers}
coeff: [-8, -4, -1, 1, 2, 4, 8]
prompts:
  - I hate you because
samples: 16
max_new_tokens: 64
seed: 0
temperature: 1.0
top_p: 0.3
freq_penalty: 1.0
metrics: [sentiment, fluency]
objective: sentiment
confirm: {confirm}
---
Issue 8's product benchmark.
"""


def child(events_path: str, argv: list[str]) -> int:
    """Run the CLI in this process with phase stamps written to `events_path`."""
    started = time.perf_counter()
    events: dict[str, object] = {}
    from actadd_notes.cli import main
    from actadd_notes.steering import models

    events["cli_imported_s"] = time.perf_counter() - started
    original_loader = models.load_model

    def timed_loader(name, **options):
        events["load_start_s"] = time.perf_counter() - started
        lm = original_loader(name, **options)
        events["load_end_s"] = time.perf_counter() - started
        cls = type(lm)
        for method in ("complete", "perplexities"):
            wrap(cls, method)
        return lm

    def wrap(cls, method):
        original = getattr(cls, method)

        def timed(self, *args, **kwargs):
            import torch

            begin = time.perf_counter() - started
            result = original(self, *args, **kwargs)
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            record = self.last_generation if method == "complete" else self.last_scoring
            events.setdefault(method, []).append(
                {"start_s": begin, "end_s": time.perf_counter() - started, "record": record.to_record()}
            )
            return result

        setattr(cls, method, timed)

    models.load_model = timed_loader  # the job's model slot imports it from there when it loads
    sys.argv = ["actadd-notes", *argv]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    events["end_s"] = time.perf_counter() - started
    Path(events_path).write_text(json.dumps(events, indent=1))
    return code


def load_child(loader: str, model_dir: str) -> dict:
    """In a fresh process: seconds to import torch, to start CUDA, to import transformers, and to load
    the model by `loader` (`transformers`: from_pretrained straight to the card; `engine`: load_model)."""
    stamps = {}
    begin = time.perf_counter()
    import torch

    stamps["import_torch_s"] = time.perf_counter() - begin
    begin = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.init()
        torch.empty(1, device="cuda")
    stamps["cuda_start_s"] = time.perf_counter() - begin
    begin = time.perf_counter()
    from transformers import AutoModelForCausalLM

    from actadd_notes.steering.models import load_model

    stamps["import_transformers_s"] = time.perf_counter() - begin
    device = "cuda" if torch.cuda.is_available() else "cpu"
    begin = time.perf_counter()
    if loader == "transformers":
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map=device)
    else:
        load_model(model_dir, device=device, dtype="bfloat16")
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    stamps["load_s"] = time.perf_counter() - begin
    return stamps


def compare_loaders(model_dir: Path, env: dict, rounds: int) -> list[dict]:
    """Both loaders, alternating, each in a fresh process timed from outside too (start-up and exit)."""
    results = []
    for _ in range(rounds):
        for loader in ("transformers", "engine"):
            begin = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--tokenizer",
                    "-",
                    "--load-child",
                    loader,
                    str(model_dir),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            entry = {"loader": loader, "wall_s": time.perf_counter() - begin, "returncode": done.returncode}
            try:
                entry.update(json.loads(done.stdout.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                entry["stderr_tail"] = done.stderr[-1500:]
            results.append(entry)
            print(json.dumps(entry), flush=True)
    return results


def build_model(folder: Path, tokenizer_dir: str, tiny: bool) -> dict:
    import torch
    from gpu_steering import model_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = model_config("llama-3-8b", tiny)
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    built = time.perf_counter() - started
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    saved = time.perf_counter() - started - built
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    return {"build_s": built, "save_s": saved, "params": params, "weight_bytes": weight_bytes, "vocab": len(tokenizer)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a folder with the SmolLM2 tokenizer files")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--confirmed-runs", type=int, default=1, help="more runs with the confirmation stage on")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--loader-rounds", type=int, default=2, help="rounds of the two loaders, alternating")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--load-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1:])
    if args.load_child:
        print(json.dumps(load_child(*args.load_child)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    work = Path(tempfile.mkdtemp(prefix="actadd-product-"))
    model_dir = work / "llama-3-8b-shape"
    summary: dict[str, object] = {"model": build_model(model_dir, args.tokenizer, args.tiny)}
    print(json.dumps(summary["model"]), flush=True)
    root = str(Path(__file__).resolve().parents[1])
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, *paths]),  # absolute: each run's working directory is its vault
        "HF_HUB_OFFLINE": "1",
        "ACTADD_NOTES_CACHE_DIR": str(work / "cache"),
    }
    python = [sys.executable]
    summary["loaders"] = compare_loaders(model_dir, env, args.loader_rounds)
    started = time.perf_counter()
    helps = []
    for _ in range(3):
        begin = time.perf_counter()
        subprocess.run(
            [*python, "-c", "from actadd_notes.cli import main; main()", "--help"],
            env=env,
            check=True,
            capture_output=True,
        )
        helps.append(time.perf_counter() - begin)
    summary["help_s"] = {"median": statistics.median(helps), "values": helps}
    layers = "[1, 2, 4, 6, 8]" if args.tiny else "[3, 8, 13, 18, 22]"
    runs = []
    for run in range(args.runs + args.confirmed_runs):
        confirm = run >= args.runs
        vault = work / f"vault{run}"
        (vault / ".obsidian").mkdir(parents=True)
        (vault / "Experiments").mkdir()
        spec = SPEC.format(model=model_dir, layers=layers, confirm=str(confirm).lower())
        (vault / "Experiments" / "sweep.md").write_text(spec)
        events = work / f"events{run}.json"
        begin = time.perf_counter()
        done = subprocess.run(
            [
                *python,
                str(Path(__file__).resolve()),
                "--tokenizer",
                args.tokenizer,
                "--child",
                str(events),
                "run",
                "Experiments/sweep.md",
                "--device",
                "cuda" if not args.tiny else "cpu",
                "--json",
            ],
            env=env,
            cwd=vault,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - begin
        entry: dict[str, object] = {
            "confirm": confirm, "wall_s": wall, "returncode": done.returncode, "stderr_tail": done.stderr[-1500:],
        }  # fmt: skip
        if events.is_file():
            entry["events"] = stamps = json.loads(events.read_text())
            generation = sum(e["end_s"] - e["start_s"] for e in stamps.get("complete", []))
            scoring = sum(e["end_s"] - e["start_s"] for e in stamps.get("perplexities", []))
            entry["phases_s"] = {
                "python_start_and_exit": wall - stamps["end_s"],
                "cli_import": stamps["cli_imported_s"],
                "until_load": stamps.get("load_start_s", 0) - stamps["cli_imported_s"],
                "load_model": stamps.get("load_end_s", 0) - stamps.get("load_start_s", 0),
                "generation": generation,
                "perplexity_scoring": scoring,
                "metrics_notes_plots_rest": stamps["end_s"] - stamps.get("load_end_s", 0) - generation - scoring,
            }
        runs.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "events"}, indent=1), flush=True)
    summary["runs"] = runs
    summary["total_s"] = time.perf_counter() - started
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or "/tmp") / "gpu_product.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
