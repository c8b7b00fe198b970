"""Time the product: `actadd-notes run` of issue 8's sweep on a random-init Llama-3-8B shape in a local folder.

The model is the Llama-3-8B layout with the embedded SmolLM2 tokenizer (so every token it can emit
decodes), randomly initialised in bf16 and saved with `save_pretrained`; the spec note is 5 layers x 7
coefficients x 16 samples x 64 tokens of one prompt, plus the baseline (576 rows), metrics sentiment
and fluency; `--runs` without the confirmation stage (the sweep alone, as issue 8 measured it) and
`--confirmed-runs` with it (the product's default). Each `run` is a fresh process, timed from outside (wall) and from
inside: a child mode wraps the CLI's model loader and `SteerableLM.complete` / `perplexities` to
stamp when each phase starts and ends, and writes the stamps from an exit handler (the console script
ends its process itself). `--breakdown` also times the run's main calls (BREAKDOWN), synchronised;
`--profile` adds a run under cProfile; `--model-dir` saves the model once for several invocations.

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


# (module, attribute path) of the calls `ACTADD_PRODUCT_BREAKDOWN=1` times inside a run, each synchronised
BREAKDOWN = [
    ("actadd_notes.steering.lm", "SteerableLM.activations"),
    ("actadd_notes.steering.decode", "Decoder.prefill"),
    ("actadd_notes.steering.decode", "_Bucket.__init__"),
    ("actadd_notes.steering.decode", "_Bucket.prepare"),
    ("actadd_notes.steering.decode", "_Bucket.load"),
    ("actadd_notes.steering.decode", "_Bucket.run"),
    ("actadd_notes.steering.decode", "Decoder.decode"),
    ("actadd_notes.experiments.metrics", "SentimentMetric.score"),
    ("actadd_notes.experiments.artifacts", "plots"),
    ("actadd_notes.publish", "render_artifacts"),
    ("actadd_notes.publish", "Publisher.publish"),
]


class Stamps:
    """Seconds since the child started, of the phases and (with `ACTADD_PRODUCT_BREAKDOWN`) the calls."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: dict[str, object] = {}

    def now(self) -> float:
        return time.perf_counter() - self.started

    @staticmethod
    def synchronize() -> None:
        import torch

        torch.cuda.synchronize() if torch.cuda.is_available() else None

    def phase(self, cls, method: str) -> None:
        """Stamp each call of `cls.method` (`complete` or `perplexities`) with its run record."""
        original = getattr(cls, method)

        def timed(lm, *args, **kwargs):
            begin = self.now()
            result = original(lm, *args, **kwargs)
            self.synchronize()
            record = lm.last_generation if method == "complete" else lm.last_scoring
            self.events.setdefault(method, []).append(
                {"start_s": begin, "end_s": self.now(), "record": record.to_record()}
            )
            return result

        setattr(cls, method, timed)

    def breakdown(self) -> None:
        """Time every call in BREAKDOWN, synchronised on both sides."""
        import importlib

        calls = self.events.setdefault("breakdown_s", {})
        for module, path in BREAKDOWN:
            owner = importlib.import_module(module)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            original = getattr(owner, name)

            def timed(*args, _original=original, _label=path, **kwargs):
                self.synchronize()
                begin = time.perf_counter()
                result = _original(*args, **kwargs)
                self.synchronize()
                calls.setdefault(_label, []).append(round(time.perf_counter() - begin, 4))
                return result

            setattr(owner, name, timed)


def child(events_path: str, argv: list[str]) -> int:
    """Run the console script in this process with phase stamps, written to `events_path` by an exit
    handler (the script ends the process itself once its handlers ran)."""
    import atexit

    stamps = Stamps()
    from actadd_notes import cli

    stamps.events["cli_imported_s"] = stamps.now()
    original_loader = cli._load_quietly

    def timed_loader(name, **options):
        stamps.events["load_start_s"] = stamps.now()
        lm = original_loader(name, **options)
        stamps.events["load_end_s"] = stamps.now()
        for method in ("complete", "perplexities"):
            stamps.phase(type(lm), method)
        if os.environ.get("ACTADD_PRODUCT_BREAKDOWN"):
            stamps.breakdown()
        return lm

    cli._load_quietly = timed_loader  # the CLI's model slot looks it up when it loads
    sys.argv = ["actadd-notes", *argv]
    profile_to = os.environ.get("ACTADD_PRODUCT_PROFILE")
    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    def write_events() -> None:
        stamps.events["end_s"] = stamps.now()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)
        Path(events_path).write_text(json.dumps(stamps.events, indent=1))

    atexit.register(write_events)
    cli.main()
    return 0


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
    parser.add_argument("--model-dir", help="where the model is saved, or was by an earlier invocation")
    parser.add_argument("--breakdown", action="store_true", help="time the run's main calls, synchronised")
    parser.add_argument("--profile", action="store_true", help="one more run without confirmation, under cProfile")
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
    model_dir = Path(args.model_dir) if args.model_dir else work / "llama-3-8b-shape"
    if (model_dir / "config.json").is_file():  # saved by an earlier invocation
        summary: dict[str, object] = {"model": {"reused": str(model_dir)}}
    else:
        summary = {"model": build_model(model_dir, args.tokenizer, args.tiny)}
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
    out_dir = Path(args.out).parent if args.out else Path(os.environ.get("OUT") or "/tmp")
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in range(args.runs + args.confirmed_runs + int(args.profile)):
        confirm = args.runs <= run < args.runs + args.confirmed_runs
        profiled = run == args.runs + args.confirmed_runs
        run_env = {**env, "ACTADD_PRODUCT_PROFILE": str(out_dir / "product_profile.prof")} if profiled else env
        if args.breakdown:
            run_env = {**run_env, "ACTADD_PRODUCT_BREAKDOWN": "1"}
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
            env=run_env,
            cwd=vault,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - begin
        entry: dict[str, object] = {"confirm": confirm, "profiled": profiled, "wall_s": wall}
        entry.update(returncode=done.returncode, stderr_tail=done.stderr[-1500:])
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
            if "breakdown_s" in stamps:
                entry["breakdown_s"] = {k: [round(sum(v), 3), len(v)] for k, v in stamps["breakdown_s"].items()}
        runs.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "events"}, indent=1), flush=True)
    summary["runs"] = runs
    summary["total_s"] = time.perf_counter() - started
    out = Path(args.out) if args.out else out_dir / "gpu_product.json"
    if args.profile and (out_dir / "product_profile.prof").is_file():
        import pstats

        stats = pstats.Stats(str(out_dir / "product_profile.prof"))
        stats.sort_stats("cumulative").print_stats(70)
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
