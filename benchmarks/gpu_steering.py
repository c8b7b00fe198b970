"""GPU benchmark: ActAdd steering overhead and batched per-row sweeps (see BENCHMARKS.md).

Randomly initialised GPT-2-XL and Llama-3-8B shapes in bf16 (nothing is downloaded), prompts of
exactly 32 tokens, exactly 64 new tokens, sampling as the ActAdd paper did (temperature 1,
top-p 0.3, frequency penalty 1). Everything is timed through the public `SteerableLM.complete`.

Part A  steered (one ActAdd at the middle layer, c=4) vs plain `complete`, interleaved
        (the order alternates each repetition), batch 1 and 64.
Part B  a 5 layers x 7 coefficients x 16 samples = 560-row sweep:
          (i)   one `complete` call with per-row vectors (`batch_size=--sweep-batch`);
          (ii)  one `complete` call per setting (35 calls of 16 rows);
          (iii) plain `complete` of the same 560 rows with the same batching.
        (i) and (iii) every repetition (order alternating), (ii) in the first --reps-b-ii.
Part P  small diagnostics: the logits processors' cost per decode step at each batch size, and
        prefill-only (max_new_tokens=1) steered-vs-plain for the sweep (delta construction).

Device:  PYTHONPATH=. python3 benchmarks/gpu_steering.py --models gpt2-xl
CPU dry run:  .venv/bin/python benchmarks/gpu_steering.py --tiny
Writes a JSON summary to --out (default $OUT/gpu_steering.json, else benchmarks/results/) and
prints it; the last lines are a short table.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.sampling import Sampling, logits_processors
from actadd_notes.steering.vectors import ActAdd

PROMPT_LEN = 32
SAMPLING = {"temperature": 1.0, "top_p": 0.3, "freq_penalty": 1.0}  # the ActAdd paper's settings
PAD_WORD = "t0"


# ------------------------------------------------------------------ models and tokenizer
def model_config(name: str, tiny: bool):
    from transformers import GPT2Config, LlamaConfig

    if name == "gpt2-xl":
        if tiny:
            return GPT2Config(n_layer=10, n_embd=64, n_head=4, vocab_size=1000, n_positions=256)
        return GPT2Config(n_layer=48, n_embd=1600, n_head=25, vocab_size=50257, n_positions=1024)
    if name == "llama-3-8b":
        if tiny:
            return LlamaConfig(
                hidden_size=64,
                num_hidden_layers=10,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=1200,
                rope_theta=500000.0,
                max_position_embeddings=256,
            )
        return LlamaConfig(
            hidden_size=4096,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=14336,
            vocab_size=128256,
            rope_theta=500000.0,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        )
    raise SystemExit(f"unknown model {name!r}")


def word_tokenizer(vocab: int):
    """Word-level tokenizer: "t{i}" is token i for every i < vocab (the model's vocabulary).

    EOS and UNK sit at ids vocab and vocab+1, outside the model's output range, so sampling can
    never emit EOS and every row generates exactly max_new_tokens. No BOS; pad is "t0".
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    words["<eos>"] = vocab
    words["<unk>"] = vocab + 1
    core = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token=PAD_WORD)


def build(name: str, tiny: bool, device: str, dtype: torch.dtype = torch.bfloat16):
    from transformers import AutoModelForCausalLM

    config = model_config(name, tiny)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    tokenizer = word_tokenizer(config.vocab_size)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    sync()
    built_s = time.perf_counter() - started
    lm = SteerableLM(model, tokenizer, name=name, prepend_bos=False)
    return lm, config, built_s


# ------------------------------------------------------------------------------ timing
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def stats(values: list[float]) -> dict:
    """Median, quartiles and range; `values` keeps the run order (pairs and order effects stay visible)."""
    ordered = sorted(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "n": len(values),
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "values": list(values),
    }


def ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def random_prompts(rows: int, vocab: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, PROMPT_LEN), generator=gen)
    return [" ".join(f"t{i}" for i in row.tolist()) for row in ids]


def check_lengths(lm: SteerableLM, completions, new_tokens: int) -> None:
    for c in completions:
        assert len(c.prompt_ids) == PROMPT_LEN, f"prompt has {len(c.prompt_ids)} tokens, not {PROMPT_LEN}"
        assert len(c.token_ids) == new_tokens, f"row generated {len(c.token_ids)} tokens, not {new_tokens}"


def actadd(layer: int, coeff: float) -> ActAdd:
    # Four-token prompt pair: the vector covers the first four prompt positions.
    return ActAdd("t11 t12 t13 t14", "t21 t22 t23 t24", layer=layer, coeff=coeff, pad_token=PAD_WORD)


# ---------------------------------------------------------------------------- parts
def part_a(lm, config, args, log) -> dict:
    layer = lm.num_layers // 2
    steer = actadd(layer, 4.0)
    out = {"layer": layer, "coeff": 4.0, "batches": {}}
    for batch in args.batches_a:
        prompts = random_prompts(batch, config.vocab_size, seed=batch)
        seeds = list(range(batch))

        # bound now (partial, not a closure over the loop's variables): each batch times its own rows
        plain = functools.partial(
            lm.complete, prompts, max_new_tokens=args.new_tokens, seeds=seeds, batch_size=batch, **SAMPLING
        )
        steered = functools.partial(plain, steer=steer)

        for _ in range(args.warmup):
            _, p = timed(plain)
            _, s = timed(steered)
        check_lengths(lm, p + s, args.new_tokens)
        differ = sum(a.token_ids != b.token_ids for a, b in zip(p, s)) / batch
        t_plain, t_steer = [], []
        for rep in range(args.reps_a):
            order = ("plain", "steered") if rep % 2 == 0 else ("steered", "plain")
            for which in order:
                dt, res = timed(plain if which == "plain" else steered)
                check_lengths(lm, res, args.new_tokens)
                (t_plain if which == "plain" else t_steer).append(dt)
        r = ratios(t_steer, t_plain)
        entry = {
            "plain_s": stats(t_plain),
            "steered_s": stats(t_steer),
            "ratio_steered_over_plain": stats(r),
            "ratio_of_medians": statistics.median(t_steer) / statistics.median(t_plain),
            "rows_changed_by_steering": differ,
            "tokens_per_s_plain": batch * args.new_tokens / statistics.median(t_plain),
            "target": "median ratio <= 1.02",
            "pass": statistics.median(r) <= 1.02,
        }
        out["batches"][str(batch)] = entry
        log(
            f"A batch {batch}: plain {entry['plain_s']['median']:.3f}s steered {entry['steered_s']['median']:.3f}s "
            f"ratio median {entry['ratio_steered_over_plain']['median']:.4f} "
            f"[{entry['ratio_steered_over_plain']['min']:.4f}, {entry['ratio_steered_over_plain']['max']:.4f}] "
            f"changed {differ:.2f}"
        )
    return out


def sweep_settings(lm, args) -> tuple[list[int], list[float]]:
    n = lm.num_layers
    layers = sorted({round(n * f) for f in (0.1, 0.25, 0.4, 0.55, 0.7)})
    assert len(layers) == 5, layers
    coeffs = [-8.0, -4.0, -1.0, 1.0, 2.0, 4.0, 8.0]
    return layers, coeffs


def part_b(lm, config, args, log, deadline: float, hard_deadline: float, save) -> dict:
    layers, coeffs = sweep_settings(lm, args)
    settings = [(layer, coeff) for layer in layers for coeff in coeffs]
    samples = args.samples
    prompt = random_prompts(1, config.vocab_size, seed=12345)[0]
    rows = len(settings) * samples
    prompts = [prompt] * rows
    seeds = [s for _ in settings for s in range(samples)]
    per_row = [[actadd(layer, coeff)] for layer, coeff in settings for _ in range(samples)]
    size = args.sweep_batch or rows

    def batched():
        return lm.complete(
            prompts, max_new_tokens=args.new_tokens, seeds=seeds, steer=per_row, batch_size=size, **SAMPLING
        )

    def plain():
        return lm.complete(prompts, max_new_tokens=args.new_tokens, seeds=seeds, batch_size=size, **SAMPLING)

    def per_setting():
        out = []
        for layer, coeff in settings:
            out += lm.complete(
                [prompt] * samples,
                max_new_tokens=args.new_tokens,
                seeds=list(range(samples)),
                steer=actadd(layer, coeff),
                batch_size=samples,
                **SAMPLING,
            )
        return out

    # warm-up: each path once (the per-setting path on one setting: same shapes as the rest)
    _, out_i = timed(batched)
    _, out_iii = timed(plain)
    lm.complete(
        [prompt] * samples,
        max_new_tokens=args.new_tokens,
        seeds=list(range(samples)),
        steer=actadd(*settings[0]),
        batch_size=samples,
        **SAMPLING,
    )
    check_lengths(lm, out_i + out_iii, args.new_tokens)
    t_i, t_ii, t_iii, t_i_same_rep = [], [], [], []
    out_ii = None
    rep = 0
    stopped_early = None
    while rep < args.reps_b or (rep < args.max_reps_b and time.perf_counter() < deadline):
        order = ["i", "iii"] if rep % 2 == 0 else ["iii", "i"]
        if rep < args.reps_b_ii:
            order.insert(rep % 3, "ii")
        # a hard stop well inside the device call's limit: what was measured so far is kept
        projected = sum(statistics.median(t) for t in (t_i, t_iii) if t) + (
            statistics.median(t_ii) if t_ii and "ii" in order else 0
        )
        if rep >= 1 and time.perf_counter() + 1.2 * projected > hard_deadline:
            stopped_early = f"stopped before repetition {rep}: the next would pass the hard deadline"
            log(stopped_early)
            break
        times = {}
        for which in order:
            dt, res = timed({"i": batched, "ii": per_setting, "iii": plain}[which])
            check_lengths(lm, res, args.new_tokens)
            assert len(res) == rows
            times[which] = dt
            if which == "ii":
                out_ii = res
        t_i.append(times["i"])
        t_iii.append(times["iii"])
        if "ii" in times:
            t_ii.append(times["ii"])
            t_i_same_rep.append(times["i"])
        log(f"B rep {rep}: " + " ".join(f"({k}) {v:.3f}s" for k, v in times.items()))
        rep += 1
        save({"partial": True, "i_s": t_i, "ii_s": t_ii, "iii_s": t_iii, "i_s_same_rep_as_ii": t_i_same_rep})
    same_as_single = sum(a.token_ids == b.token_ids for a, b in zip(out_i, out_ii)) / rows
    changed = sum(a.token_ids != b.token_ids for a, b in zip(out_i, out_iii)) / rows
    r_speed = ratios(t_ii, t_i_same_rep)
    r_cost = ratios(t_i, t_iii)
    out = {
        "layers": layers,
        "coeffs": coeffs,
        "samples": samples,
        "rows": rows,
        "batch_size": size,
        "i_batched_per_row_s": stats(t_i),
        "ii_per_setting_s": stats(t_ii),
        "iii_plain_s": stats(t_iii),
        "ratio_ii_over_i": stats(r_speed),
        "ratio_i_over_iii": stats(r_cost),
        "rows_identical_batched_vs_per_setting": same_as_single,
        "rows_changed_by_steering": changed,
        "tokens_per_s": {
            "i": rows * args.new_tokens / statistics.median(t_i),
            "ii": rows * args.new_tokens / statistics.median(t_ii),
            "iii": rows * args.new_tokens / statistics.median(t_iii),
        },
        "stopped_early": stopped_early,
        "pass_speedup_ge_10": statistics.median(r_speed) >= 10,
        "pass_cost_le_1.05": statistics.median(r_cost) <= 1.05,
    }
    log(
        f"B: (ii)/(i) median {out['ratio_ii_over_i']['median']:.2f}x  (i)/(iii) median "
        f"{out['ratio_i_over_iii']['median']:.4f}  identical {same_as_single:.3f} changed {changed:.3f}"
    )
    return out


def _sample_steps(procs, ids, scores, n: int) -> list:
    return [procs(ids, scores).argmax(-1) for _ in range(n)]


def part_p(lm, config, args, log) -> dict:
    """Diagnostics: what a decode step's sampler costs, and prefill-only steered vs plain."""
    out = {"processors_ms_per_step": {}, "prefill_only": {}}
    device = lm.device
    vocab = config.vocab_size
    context = PROMPT_LEN + args.new_tokens
    for batch in sorted({1, args.samples, *args.batches_a, args.sweep_batch or 35 * args.samples}):
        procs = logits_processors(Sampling(**SAMPLING), list(range(batch)), [0] * batch)
        ids = torch.randint(0, vocab, (batch, context), device=device)
        scores = torch.randn(batch, vocab, device=device)
        for _ in range(2):
            procs(ids, scores)
        n = 10
        dt, _ = timed(functools.partial(_sample_steps, procs, ids, scores, n))
        out["processors_ms_per_step"][str(batch)] = 1000 * dt / n
    log("P processors ms/step: " + json.dumps({k: round(v, 3) for k, v in out["processors_ms_per_step"].items()}))

    layers, coeffs = sweep_settings(lm, args)
    settings = [(layer, coeff) for layer in layers for coeff in coeffs]
    prompt = random_prompts(1, vocab, seed=12345)[0]
    rows = len(settings) * args.samples
    per_row = [[actadd(layer, coeff)] for layer, coeff in settings for _ in range(args.samples)]
    size = args.sweep_batch or rows
    common = {
        "max_new_tokens": 1,
        "seeds": [s for _ in settings for s in range(args.samples)],
        "batch_size": size,
        **SAMPLING,
    }

    def steered():
        return lm.complete([prompt] * rows, steer=per_row, **common)

    def plain():
        return lm.complete([prompt] * rows, **common)

    timed(steered), timed(plain)
    ts, tp = [], []
    for rep in range(args.reps_p):
        for which in ("p", "s") if rep % 2 == 0 else ("s", "p"):
            dt, _ = timed(plain if which == "p" else steered)
            (tp if which == "p" else ts).append(dt)
    out["prefill_only"] = {
        "rows": rows,
        "plain_s": stats(tp),
        "steered_per_row_s": stats(ts),
        "extra_ms_median": 1000 * (statistics.median(ts) - statistics.median(tp)),
    }
    log(
        f"P prefill-only {rows} rows: plain {statistics.median(tp) * 1000:.1f} ms, per-row steered "
        f"{statistics.median(ts) * 1000:.1f} ms"
    )
    return out


# ---------------------------------------------------------------------------- main
def _git_head() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=Path(__file__).resolve().parents[1],
            ).stdout.strip()
            or "unknown"
        )
    except Exception:
        return "unknown"


def environment(command: str) -> dict:
    import tokenizers
    import transformers

    engine = Path(__file__).resolve().parents[1] / "actadd_notes" / "steering"
    digest = hashlib.sha256()
    for path in sorted(engine.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    env = {
        "command": command,
        "engine_sha256": digest.hexdigest()[:16],  # of actadd_notes/steering/*.py as run
        "git_head": _git_head(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        env["card"] = torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        env["card_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["multiprocessors"] = props.multi_processor_count
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception as error:
            env["driver"] = f"unavailable: {error}"
    else:
        env["card"] = "cpu"
    return env


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gpt2-xl,llama-3-8b")
    parser.add_argument("--parts", default="A,P,B")
    parser.add_argument("--tiny", action="store_true", help="small configs and few repetitions (CPU dry run)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps-a", type=int, default=10)
    parser.add_argument("--batches-a", default="1,64")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument(
        "--sweep-batch", type=int, default=0, help="batch_size for (i) and (iii); 0 = all 560 rows in one batch"
    )
    parser.add_argument("--reps-b", type=int, default=5, help="repetitions of (i) and (iii)")
    parser.add_argument("--max-reps-b", type=int, default=10, help="more (i)/(iii) repetitions while --budget-s allows")
    parser.add_argument("--reps-b-ii", type=int, default=3, help="repetitions of (ii), the slow path")
    parser.add_argument("--reps-p", type=int, default=5)
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="soft wall-clock budget per model for the optional extra reps"
    )
    parser.add_argument(
        "--hard-s",
        type=float,
        default=540.0,
        help="no Part B repetition starts that would end past this many seconds after start",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.batches_a = [int(b) for b in args.batches_a.split(",")]
    if args.tiny:
        args.warmup, args.reps_a, args.reps_b, args.max_reps_b, args.reps_b_ii, args.reps_p = 1, 2, 2, 2, 1, 2
        args.new_tokens = min(args.new_tokens, 8)
        args.batches_a = [1, 4]
    return args


def output_path(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_steering.json"
    if args.tiny:
        return Path("/tmp/gpu_steering_tiny.json")
    return Path(__file__).parent / "results" / "gpu_steering_local.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def bench_model(name: str, args: argparse.Namespace, device: str, dtype, script_start: float, save) -> dict:
    """Every part asked for on one model; `save(entry)` after each, so a killed run keeps what it measured."""
    started = time.perf_counter()
    lm, config, built_s = build(name, args.tiny, device, dtype)
    entry = {
        "layers": lm.num_layers,
        "vocab": config.vocab_size,
        "build_s": built_s,
        "params_b": sum(p.numel() for p in lm.model.parameters()) / 1e9,
    }
    save(entry)
    log(f"{name}: built in {built_s:.1f}s, {entry['params_b']:.2f}B params, {lm.num_layers} layers")
    parts = args.parts.split(",")
    if "A" in parts:
        entry["A"] = part_a(lm, config, args, log)
        save(entry)
    if "P" in parts:
        entry["P"] = part_p(lm, config, args, log)
        save(entry)
    if "B" in parts:

        def save_b(partial):
            entry["B"] = partial
            save(entry)

        entry["B"] = part_b(
            lm,
            config,
            args,
            log,
            deadline=started + args.budget_s,
            hard_deadline=script_start + args.hard_s,
            save=save_b,
        )
    entry["wall_s"] = time.perf_counter() - started
    if device == "cuda":
        entry["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    save(entry)
    del lm
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return entry


def print_table(summary: dict) -> None:
    def row(name: str, test: str, r: dict, digits: int, target: str, passed) -> None:
        figures = f"{r['median']:.{digits}f}  [{r['min']:.{digits}f}, {r['max']:.{digits}f}]"
        print(f"{name:11s} {test:38s} {figures:26s} {target:7s} {passed}")

    print("\nmodel       test                                   median   [min, max]         target  pass")
    for name, entry in summary["models"].items():
        for batch, a in entry.get("A", {}).get("batches", {}).items():
            row(name, f"A steered/plain batch {batch}", a["ratio_steered_over_plain"], 4, "<=1.02", a["pass"])
        b = entry.get("B")
        if b:
            r = b["ratio_ii_over_i"]
            row(name, f"B (ii) per-setting / (i) batched (n={r['n']})", r, 2, ">=10", b["pass_speedup_ge_10"])
            r = b["ratio_i_over_iii"]
            row(name, f"B (i) batched / (iii) plain (n={r['n']})", r, 4, "<=1.05", b["pass_cost_le_1.05"])


def main(argv=None) -> int:
    script_start = time.perf_counter()
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # bf16 matrix products are very slow on CPUs without bf16 units: the CPU dry run uses float32
    dtype = torch.bfloat16 if device == "cuda" or not args.tiny else torch.float32
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out_path = output_path(args)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "environment": environment(command),
        "settings": {
            "prompt_tokens": PROMPT_LEN,
            "new_tokens": args.new_tokens,
            "sampling": SAMPLING,
            "dtype": str(dtype).removeprefix("torch."),
            "tiny": args.tiny,
            "device": device,
            "reps_a": args.reps_a,
            "warmup": args.warmup,
            "reps_b_ii": args.reps_b_ii,
        },
        "models": {},
    }
    log(json.dumps(summary["environment"]))

    for name in args.models.split(","):

        def save(entry: dict, name: str = name) -> None:
            summary["models"][name] = entry
            out_path.write_text(json.dumps(summary, indent=1))

        bench_model(name, args, device, dtype, script_start, save)
    print(json.dumps(summary, indent=1))
    print_table(summary)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
