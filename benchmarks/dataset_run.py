"""Time a data-set run (issue "research scale"): `actadd-notes run` of a spec whose prompts are 200 reviews.

The benchmark writes, in a fresh temporary vault, `Data/reviews.csv` (a `text` column of 200 distinct
short negative review openings, built deterministically from subjects × complaints) and the spec note
`Experiments/dataset-run.md`: Love − Hate, 5 layers × 4 coefficients (20 settings), `prompts:
"[[Data/reviews.csv]]"`, 8 samples and 8 confirmation samples of 32 tokens, metrics sentiment and
fluency, seed 0, top_p 0.3, freq_penalty 1, `max_generations: 50000`. With 20 or more prompts the tool
holds half of them out: the search is 21 settings × 100 prompts × 8 samples = 16,800 rows and the
confirmation 4 arms (baseline, best, random-direction control, prompting) × 100 × 8 = 3,200 rows.

Each run is `python -m actadd_notes run Experiments/dataset-run.md --json --device D` in a fresh process
whose working folder is the vault, as a user runs it; the process is a `-c` wrapper that calls the
console script's `main` after registering an exit handler (the script ends its process with
`os._exit` once the handlers ran, `actadd_notes/process.py`) that reports the peak GPU memory
(`torch.cuda.max_memory_allocated`), the peak RSS, and, by wrapping the loaded model's `complete` and
`perplexities`, each call's time, rows and exact generated tokens. Reported per run: wall time from
outside, the pipeline's own times from the reproducibility record in `results.json`, generated rows
(from `completions.csv`), new tokens and new tokens/s, peak memory, and the bytes of the result note,
`results.json`, `completions.csv`, `prompts.csv` and the whole artifacts folder.

Models: `--model-dir DIR` (a saved folder); `--make-model DIR --tokenizer TOK` first saves there a
randomly initialised Llama-3-8B-shaped model in bf16 with that tokenizer (`--tiny`: 2 layers, hidden
64, for a CPU smoke test); neither: the embedded SmolLM2-135M (`model: embedded`). `--save-tokenizer
DIR` saves the embedded model's tokenizer to DIR and exits (the device machine has no embedded model).

Here, once:  .venv/bin/python benchmarks/dataset_run.py --save-tokenizer build/gpu_carry/smollm2-tokenizer
Device (ruamel.yaml and vaderSentiment wheels unpacked on PYTHONPATH, as BENCHMARKS.md says):
             python3 benchmarks/dataset_run.py --device cuda --make-model /tmp/m8b \
                 --tokenizer build/gpu_carry/smollm2-tokenizer --out $OUT/dataset_run_h100.json
CPU:         HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dataset_run.py --device cpu --prompts 40 --layers 2 \
                 --coeffs 2 --samples 2 --confirm-samples 2 --tokens 16 --out benchmarks/results/dataset_run_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = "Experiments/dataset-run.md"
DATA_PATH = "Data/reviews.csv"

SUBJECTS = [
    "This movie", "The hotel", "My new phone", "The restaurant", "This book", "The airline", "The laptop",
    "This blender", "The gym", "The concert", "This app", "The rental car", "This vacuum cleaner",
    "The pizza place", "The headphones", "The sequel", "This video game", "The coffee maker", "The guided tour",
    "The mattress", "This online course", "The delivery service", "The museum", "The hair salon", "This printer",
]  # fmt: skip
COMPLAINTS = [
    "was a waste of money because", "broke after a week and", "was a total disappointment since",
    "made me regret paying for it because", "was so bad that", "fell apart as soon as",
    "is the worst I have ever tried, and", "let me down when", "was overpriced and", "ruined my weekend because",
    "never worked properly, so", "left me furious because",
]  # fmt: skip

# Layers and coefficients, the first N of each taken (`--layers N`, `--coeffs N`)
LAYER_POOL = {"model": [4, 8, 12, 16, 20], "embedded": [2, 4, 6, 8, 10]}
COEFF_POOL = {"model": [1, 2, 4, 8], "embedded": [2, 4, 1, 8]}

SPEC = """---
type: actadd-experiment
status: queued
model: {model}
prompt_add: Love
prompt_sub: Hate
layer: {layers}
coeff: {coeffs}
prompts: "[[{data}]]"
samples: {samples}
confirm_samples: {confirm_samples}
max_new_tokens: {tokens}
metrics: [sentiment, fluency]
seed: {seed}
top_p: 0.3
freq_penalty: 1.0
max_generations: {max_generations}
{extra}---
The "research scale" benchmark: {prompts} review openings from a data file, split search / held out.
"""

# The process a run is: the console script, with an exit handler that reports what only the process
# knows. argv: report path, then the command line. Instruments the model once the CLI has loaded it
# (`cli._load_quietly`, looked up at load time), so the imports keep the CLI's own order and pauses.
CHILD = r"""
import atexit, json, os, resource, sys, time
started = time.perf_counter()
report_path, *argv = sys.argv[1:]
report = {"complete": [], "perplexities": [], "instrumented": False}
from actadd_notes import cli
report["cli_imported_s"] = time.perf_counter() - started

def now():
    return time.perf_counter() - started

def wrap(cls, method):
    original = getattr(cls, method)
    def timed(lm, *args, **kwargs):
        begin = now()
        out = original(lm, *args, **kwargs)
        entry = {"start_s": begin, "end_s": now(), "rows": len(out)}
        record = lm.last_generation if method == "complete" else lm.last_scoring
        if method == "complete":
            entry["new_tokens"] = sum(len(c.token_ids) for c in out)
        entry["record"] = record.to_record() if record is not None else {}
        report[method].append(entry)
        return out
    setattr(cls, method, timed)

original_loader = getattr(cli, "_load_quietly", None)
if original_loader is not None:
    def loader(name, **options):
        report["load_start_s"] = now()
        lm = original_loader(name, **options)
        report["load_end_s"] = now()
        for method in ("complete", "perplexities"):
            wrap(type(lm), method)
        report["instrumented"] = True
        return lm
    cli._load_quietly = loader

def write():
    report["end_s"] = now()
    report["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch = sys.modules.get("torch")
    if torch is not None:
        report["torch"] = torch.__version__
        report["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            report["gpu"] = torch.cuda.get_device_name()
            report["gpu_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
            report["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
            report["cuda_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        report["transformers"] = transformers.__version__
    with open(report_path, "w") as handle:
        json.dump(report, handle, indent=1)

atexit.register(write)
sys.argv = ["actadd-notes", *argv]
cli.main()
"""


def review_openings(count: int) -> list[str]:
    """`count` distinct openings, the same every time: subjects × complaints, walked so that the first
    few already mix subjects and complaints."""
    combos = len(SUBJECTS) * len(COMPLAINTS)
    if not 0 < count <= combos:
        raise SystemExit(f"--prompts: 1 to {combos}, not {count}")
    pairs = list(product(range(len(SUBJECTS)), range(len(COMPLAINTS))))
    pairs.sort(key=lambda sc: ((sc[1] - sc[0]) % len(COMPLAINTS), sc[0]))  # diagonals: every subject, then the next
    return [f"{SUBJECTS[s]} {COMPLAINTS[c]}" for s, c in pairs[:count]]


def write_prompts(vault: Path, count: int) -> Path:
    path = vault / DATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text"])
    writer.writerows([text] for text in review_openings(count))
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def model_layers(model_dir: Path) -> int | None:
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("num_hidden_layers") or config.get("n_layer")


def choose(pool: list[float], count: int, explicit: str | None, what: str) -> list:
    if explicit:
        return [float(v) if "." in v else int(v) for v in explicit.split(",")]
    if not 0 < count <= len(pool):
        raise SystemExit(f"--{what}: 1 to {len(pool)}, not {count} (or give --{what[:-1]}-values)")
    return pool[:count]


def pick_layers(args: argparse.Namespace, kind: str, num_layers: int | None) -> list[int]:
    """The first `--layers` of the pool, kept to layers the model has (filled from its other layers)."""
    if args.layer_values:
        return choose([], 0, args.layer_values, "layers")
    pool = LAYER_POOL[kind]
    if num_layers is None:
        return choose(pool, args.layers, None, "layers")
    chosen = [layer for layer in pool if layer < num_layers][: args.layers]
    chosen += [layer for layer in [*range(1, num_layers), 0] if layer not in chosen][: args.layers - len(chosen)]
    if len(chosen) < args.layers:
        raise SystemExit(f"--layers {args.layers}: the model has only {num_layers} layers")
    return sorted(chosen)


def expected_rows(prompts: int, settings: int, samples: int, confirm_samples: int) -> dict[str, object]:
    """The product's count (spec.estimate_work): held_out from 20 prompts, the search keeping the larger half."""
    held = prompts // 2 if prompts >= 20 else prompts
    searched = prompts - prompts // 2 if prompts >= 20 else prompts
    search = (settings + 1) * searched * samples
    confirmation = 4 * held * confirm_samples  # baseline, best, control, prompting (if a best setting passed)
    return {
        "search": search,
        "confirmation": confirmation,
        "total": search + confirmation,
        "note": "the confirmation runs only when a setting passes the fluency guard",
    }


def spec_text(args: argparse.Namespace, model: str, layers: list[int], coeffs: list) -> str:
    extra = f"batch_size: {args.batch_size}\n" if args.batch_size else ""
    return SPEC.format(
        model=json.dumps(model),  # a JSON string is a YAML double-quoted scalar
        layers=json.dumps(layers),
        coeffs=json.dumps(coeffs),
        data=DATA_PATH,
        samples=args.samples,
        confirm_samples=args.confirm_samples,
        tokens=args.tokens,
        seed=args.seed,
        max_generations=args.max_generations,
        prompts=args.prompts,
        extra=extra,
    )


def make_vault(folder: Path, args: argparse.Namespace, spec: str) -> Path:
    (folder / ".obsidian").mkdir(parents=True)
    write_prompts(folder, args.prompts)
    (folder / SPEC_PATH).parent.mkdir(parents=True)
    (folder / SPEC_PATH).write_text(spec, encoding="utf-8")
    return folder


def child_env(args: argparse.Namespace) -> dict[str, str]:
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *paths]),  # absolute: each run's working folder is its vault
        "HF_HUB_OFFLINE": "1",
    }
    if args.cache_dir:
        env["ACTADD_NOTES_CACHE_DIR"] = str(Path(args.cache_dir).resolve())
    return env


def file_sizes(vault: Path, result_note: str | None) -> dict[str, object]:
    """Bytes of the result note, the main artifacts and the whole artifacts folder of the (one) run."""
    sizes: dict[str, object] = {}
    folders = sorted((vault / "Results" / "artifacts").glob("*"))
    if result_note:
        note = vault / result_note
        sizes["result_note"] = note.stat().st_size if note.is_file() else None
        named = vault / "Results" / "artifacts" / note.stem
        folders = [named] if named.is_dir() else folders
    if len(folders) != 1:
        sizes["error"] = f"expected one artifacts folder, found {[f.name for f in folders]}"
        return sizes
    folder = folders[0]
    sizes["artifacts_folder_name"] = folder.name
    for name in ("results.json", "completions.csv", "prompts.csv", "settings.csv"):
        sizes[name] = (folder / name).stat().st_size if (folder / name).is_file() else None
    files = [p for p in folder.rglob("*") if p.is_file()]
    sizes["artifacts_folder"] = sum(p.stat().st_size for p in files)
    sizes["artifacts_files"] = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(files)}
    return sizes


def count_rows(completions: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    with completions.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows[row["stage"]] = rows.get(row["stage"], 0) + 1
    return rows


def inside_figures(report: dict) -> dict[str, object]:
    """From the child's report: load, generation and scoring seconds, exact new tokens, peak memory."""
    calls, scoring = report.get("complete", []), report.get("perplexities", [])
    figures: dict[str, object] = {
        "cli_import_s": report.get("cli_imported_s"),
        "load_model_s": report.get("load_end_s", 0) - report.get("load_start_s", 0),
        "generation_s": sum(c["end_s"] - c["start_s"] for c in calls),
        "perplexity_scoring_s": sum(c["end_s"] - c["start_s"] for c in scoring),
        "process_end_s": report.get("end_s"),
        "complete_calls": [{k: v for k, v in c.items() if k != "record"} for c in calls],
        "generation_records": [c["record"] for c in calls],
        "scoring_records": [c["record"] for c in scoring],
        "host_peak_rss_bytes": report.get("ru_maxrss_bytes"),
        "gpu_peak_allocated_bytes": report.get("cuda_max_memory_allocated_bytes"),
        "gpu_peak_reserved_bytes": report.get("cuda_max_memory_reserved_bytes"),
    }
    if report.get("instrumented"):
        figures["new_tokens"] = sum(c["new_tokens"] for c in calls)
        figures["generated_rows_by_calls"] = sum(c["rows"] for c in calls)
    return figures


def tokens_and_rates(entry: dict, rows: int, max_new_tokens: int) -> None:
    """New tokens (exact from the wrapped `complete`, else rows × max_new_tokens as an upper bound) per second
    of: the whole process (outside), the pipeline (the record's wall_time_s) and the generate calls alone."""
    inside = entry.get("inside", {})
    if "new_tokens" in inside:
        tokens, how = inside["new_tokens"], "exact: sum of generated token ids over every completion"
    else:
        tokens, how = rows * max_new_tokens, "upper bound: rows × max_new_tokens (no per-row counts)"
    entry["new_tokens"], entry["new_tokens_counted"] = tokens, how
    pipeline = entry.get("record", {}).get("wall_time_s")
    entry["new_tokens_per_s"] = {
        "process_wall": tokens / entry["wall_s"],
        "pipeline_wall_time_s": tokens / pipeline if pipeline else None,
        "generate_calls": tokens / inside["generation_s"] if inside.get("generation_s") else None,
    }


def read_results(path: Path) -> dict[str, object]:
    """From results.json: the reproducibility record (times, batch plans), where the prompts came from, the verdict."""
    results = json.loads(path.read_text())
    prompts = results.get("prompts", {})
    source = {k: v for k, v in (prompts.get("source") or {}).items() if k != "row_ids"}
    return {
        "record": results.get("reproducibility", {}),
        "prompts_record": {
            "count": prompts.get("count"),
            "design": prompts.get("design"),
            "search": len(prompts.get("search", [])),
            "held_out": len(prompts.get("confirmation", [])),
            "source": source,
        },
        "verdict": results.get("verdict"),
    }


def run_once(vault: Path, args: argparse.Namespace, env: dict[str, str], device: str) -> dict:
    report_path = vault.parent / f"{vault.name}-process.json"
    command = [sys.executable, "-c", CHILD, str(report_path), "run", SPEC_PATH, "--json", "--device", device]
    load_before = os.getloadavg()
    begin = time.perf_counter()
    done = subprocess.run(command, cwd=vault, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - begin
    entry: dict = {"vault": str(vault), "wall_s": wall, "returncode": done.returncode}
    entry["load_average_before_after"] = [load_before, os.getloadavg()]  # other work on the machine skews CPU times
    entry["stderr_tail"] = done.stderr[-3000:]
    try:
        entry["cli"] = cli = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        entry["stdout_tail"] = done.stdout[-3000:]
        return entry
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        entry["inside"] = inside_figures(report)
        versions = ("torch", "transformers", "torch_threads", "gpu", "gpu_total_bytes")
        entry["process"] = {key: report[key] for key in versions if key in report}
    entry["sizes_bytes"] = sizes = file_sizes(vault, cli.get("result_note"))
    folder = vault / "Results" / "artifacts" / str(sizes.get("artifacts_folder_name", ""))
    if (folder / "results.json").is_file():
        entry.update(read_results(folder / "results.json"))
    if (folder / "completions.csv").is_file():
        entry["rows"] = count_rows(folder / "completions.csv")
        entry["rows"]["total"] = sum(entry["rows"].values())
        tokens_and_rates(entry, entry["rows"]["total"], args.tokens)
    return entry


def save_tokenizer(target: str) -> dict:
    from transformers import AutoTokenizer

    from actadd_notes.steering.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    tokenizer.save_pretrained(target)
    return {"saved_tokenizer": target, "vocab": len(tokenizer)}


def llama_config(vocab: int, tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
        shape["num_key_value_heads"] = 2
    else:
        shape = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32}
        shape["num_key_value_heads"] = 8
    return LlamaConfig(
        **shape,
        vocab_size=vocab,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def build_model(folder: str, tokenizer_dir: str, tiny: bool) -> dict:
    """A random-init Llama-3-8B shape (or the tiny one) in bf16 with `tokenizer_dir`'s tokenizer, saved to `folder`
    (as gpu_product.py does); in its own process, so this one holds no GPU memory while the runs go."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tokenizer_dir == "embedded":
        from actadd_notes.steering.models import embedded_model_dir

        tokenizer_dir = str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = llama_config(len(tokenizer), tiny)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    built = time.perf_counter() - started
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        "folder": folder,
        "tiny": tiny,
        "build_s": built,
        "save_s": time.perf_counter() - started - built,
        "params": sum(p.numel() for p in model.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "vocab": len(tokenizer),
        "layers": config.num_hidden_layers,
    }


def prepare_model(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, dict]:
    """The spec's `model` and how it came to be: built (`--make-model`), reused, or the embedded model
    (converted from its GGUF into the cache before the timed runs, if it is not there yet)."""
    if args.make_model and not (Path(args.make_model) / "config.json").is_file():
        command = [sys.executable, str(Path(__file__).resolve()), "--build-child", args.make_model, args.tokenizer]
        done = subprocess.run([*command, *(["--tiny"] if args.tiny else [])], env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"building the model failed:\n{done.stderr[-3000:]}")
        return str(Path(args.make_model).resolve()), json.loads(done.stdout.strip().splitlines()[-1])
    folder = args.model_dir or args.make_model
    if folder:
        if not (Path(folder) / "config.json").is_file():
            raise SystemExit(f"{folder}: no config.json — a saved model folder, or build one with --make-model")
        return str(Path(folder).resolve()), {"reused": str(Path(folder).resolve())}
    begin = time.perf_counter()
    code = "from actadd_notes.steering.models import embedded_model_dir; print(embedded_model_dir())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the embedded model is not usable:\n{done.stderr[-3000:]}")
    return "embedded", {"embedded": done.stdout.strip(), "cache_ready_s": time.perf_counter() - begin}


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
    }


def summarise(runs: list[dict]) -> dict[str, object]:
    ok = [r for r in runs if r.get("returncode") == 0 and "rows" in r]
    if not ok:
        return {"ok_runs": 0}
    first = ok[0]
    return {
        "ok_runs": len(ok),
        "median_wall_s": statistics.median(r["wall_s"] for r in ok),
        "median_pipeline_s": statistics.median(r.get("record", {}).get("wall_time_s") or 0 for r in ok),
        "rows": first["rows"],
        "new_tokens": first["new_tokens"],
        "new_tokens_counted": first["new_tokens_counted"],
        "median_new_tokens_per_s_process": statistics.median(r["new_tokens_per_s"]["process_wall"] for r in ok),
        "gpu_peak_allocated_bytes": max((r["inside"].get("gpu_peak_allocated_bytes") or 0) for r in ok) or None,
        "host_peak_rss_bytes": max((r["inside"].get("host_peak_rss_bytes") or 0) for r in ok) or None,
        "sizes_bytes": {k: v for k, v in first["sizes_bytes"].items() if k != "artifacts_files"},
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the run's --device (cuda or cpu)")
    parser.add_argument("--model-dir", help="a saved model folder; neither this nor --make-model: `embedded`")
    parser.add_argument("--make-model", metavar="DIR", help="save a random-init Llama-3-8B shape here (kept if there)")
    parser.add_argument("--tokenizer", default="embedded", help="for --make-model: a tokenizer folder, or embedded")
    parser.add_argument("--tiny", action="store_true", help="--make-model builds 2 layers, hidden 64 (CPU smoke test)")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="save the embedded model's tokenizer here and exit")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--layers", type=int, default=5, help="how many layers of the pool")
    parser.add_argument("--coeffs", type=int, default=4, help="how many coefficients of the pool")
    parser.add_argument("--layer-values", help="comma-separated layers, instead of the pool")
    parser.add_argument("--coeff-values", help="comma-separated coefficients, instead of the pool")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--confirm-samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-generations", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, help="the spec's batch_size (default: the tool plans it)")
    parser.add_argument("--runs", type=int, default=1, help="runs, each a fresh vault and process")
    parser.add_argument("--work", help="folder for the vaults (default: a new temporary folder); kept")
    parser.add_argument("--cache-dir", help="ACTADD_NOTES_CACHE_DIR for the runs (default: as the environment has it)")
    parser.add_argument("--out", help="the JSON results (default: $OUT/dataset_run.json, or /tmp/dataset_run.json)")
    parser.add_argument("--build-child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.build_child:
        print(json.dumps(build_model(*args.build_child, args.tiny)))
        return 0
    if args.save_tokenizer:
        print(json.dumps(save_tokenizer(args.save_tokenizer)))
        return 0
    if args.model_dir and args.make_model:
        raise SystemExit("--model-dir or --make-model, not both (--make-model DIR reuses DIR once it is saved)")
    env = child_env(args)
    model, model_info = prepare_model(args, env)
    print(json.dumps({"model": model_info}), flush=True)
    kind = "embedded" if model == "embedded" else "model"
    num_layers = None if model == "embedded" else model_layers(Path(model))
    layers = pick_layers(args, kind, num_layers)
    coeffs = choose(COEFF_POOL[kind], args.coeffs, args.coeff_values, "coeffs")
    spec = spec_text(args, model, layers, coeffs)
    settings = len(layers) * len(coeffs)
    expected = expected_rows(args.prompts, settings, args.samples, args.confirm_samples)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="actadd-dataset-run-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for number in range(args.runs):
        vault = make_vault(work / f"vault{number}", args, spec)
        entry = run_once(vault, args, env, args.device)
        runs.append(entry)
        shown = {k: v for k, v in entry.items() if k not in ("verdict", "inside")}
        print(json.dumps(shown, indent=1, default=str), flush=True)
    summary = {
        "benchmark": "dataset_run",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), **(runs[0].get("process", {}) if runs else {})},
        "options": {k: v for k, v in vars(args).items() if k != "build_child"},
        "model": model_info,
        "layers": layers,
        "coeffs": coeffs,
        "expected_rows": expected,
        "spec": spec,
        "summary": summarise(runs),
        "runs": runs,
    }
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or "/tmp") / "dataset_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps(summary["summary"], indent=1))
    print(f"wrote {out}")
    return 0 if summary["summary"].get("ok_runs") == args.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
