"""GPU benchmark of the decode paths (issue 8): compiled static-cache decoding vs transformers' generate.

Randomly initialised Llama-3-8B shape in bf16 (nothing is downloaded), 32-token prompts, EOS outside
the model's vocabulary (every row generates exactly max_new_tokens), the ActAdd paper's sampling
(temperature 1, top-p 0.3, frequency penalty 1) unless a part says otherwise. Every timing is one
public `SteerableLM.complete` call with `torch.cuda.synchronize()` around it; first calls of a
shape (compilation, graph capture) are reported apart and never mixed into medians.

Decode paths: `compiled` (Inductor + CUDA graphs), `static` (the same loop, eager kernels captured as
CUDA graphs, no compilation), `eager` (transformers' generate with the engine's processors: the
engine as it was), and in part H transformers' own `generate(cache_implementation="static")`.

R  copy bandwidth and the batch-1 floor for these weights
C  correctness: tokens of every path against generate, float32 (small Llama shape) and bf16 (8B)
S  the sampler alone, ms per step: transformers' processors vs sample_tokens (sort / radix / triton,
   eager / compiled / CUDA graph), flat and peaked random logits, and token agreement
A  batch 1, 64 tokens: plain vs steered (one ActAdd at layer 16, c=4), interleaved, per path
L  batch 1, max_new_tokens 32 / 128 / 512 (compiled, static)
B  batch 16, 64, 256 and the 560-row sweep (5 layers x 7 coeffs x 16 samples, per-row vectors)
   vs plain, interleaved, per path
D  bf16 batch composition: the same 576-row sweep (35 settings + baseline) batched 576, 64 and 16
H  transformers' generate with its static cache (compiled by transformers), greedy, 128 tokens
P  decode steps alone: a bucket's captured graph replayed (ms per step), its kernels profiled

Device:  PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_decode.py
CPU dry run:  .venv/bin/python benchmarks/gpu_decode.py --tiny
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_steering import (
    PROMPT_LEN,
    SAMPLING,
    actadd,
    environment,
    model_config,
    random_prompts,
    ratios,
    stats,
    sweep_settings,
    sync,
    timed,
    word_tokenizer,
)

from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.sampling import Sampling, logits_processors, sample_tokens, token_counts

ISSUE_FLOOR_TOK_S = 263.0  # issue 8: 16.06 GB of weights at 4.23 TB/s


def build(tiny: bool, device: str, dtype: torch.dtype, small: bool = False) -> SteerableLM:
    from transformers import AutoModelForCausalLM, LlamaConfig

    if small:  # the correctness model: Llama-3 layout, few layers, float32
        config = LlamaConfig(
            hidden_size=256 if tiny else 1024,
            num_hidden_layers=2 if tiny else 4,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=512 if tiny else 3584,
            vocab_size=1200 if tiny else 32000,
            max_position_embeddings=1024,
            initializer_range=0.2 if tiny else 0.05,
        )
    else:
        config = model_config("llama-3-8b", tiny)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    tokenizer = word_tokenizer(config.vocab_size)
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # outside the vocabulary: never sampled
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    sync()
    return SteerableLM(model, tokenizer, name="llama-3-8b-shape", prepend_bos=False)


def run_complete(lm: SteerableLM, prompts, *, decode, new, seeds=None, steer=None, batch_size=None, **sampling):
    sampling = sampling or SAMPLING
    return lm.complete(
        prompts,
        max_new_tokens=new,
        seeds=seeds if seeds is not None else list(range(len(prompts))),
        steer=steer,
        batch_size=batch_size or len(prompts),
        decode=decode,
        **sampling,
    )


def lengths_ok(completions, new: int) -> None:
    for c in completions:
        assert len(c.token_ids) == new, f"a row generated {len(c.token_ids)} tokens, not {new}"


def same_rows(a, b) -> float:
    return sum(x.token_ids == y.token_ids for x, y in zip(a, b)) / len(a)


# ---------------------------------------------------------------------------- parts
def part_r(lm, args, log) -> dict:
    n = (1 << 26) if args.tiny else (1 << 30)  # 4 GiB of float32 on the GPU
    src = torch.randn(n, device=lm.device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        dt, _ = timed(lambda: dst.copy_(src))
        times.append(dt)
    bandwidth = 2 * src.numel() * 4 / statistics.median(times)
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    out = {
        "copy_bytes_read_plus_written_per_s": bandwidth,
        "weight_bytes": weights,
        "floor_tok_s_batch1": bandwidth / weights,
        "issue_floor_tok_s": ISSUE_FLOOR_TOK_S,
    }
    log(f"R copy {bandwidth / 1e12:.2f} TB/s, weights {weights / 1e9:.2f} GB -> floor {bandwidth / weights:.0f} tok/s")
    return out


def part_c(args, log, device) -> dict:
    """float32: every path against generate on a small Llama-3-layout model; rows and batchings."""
    lm = build(args.tiny, device, torch.float32, small=True)
    vocab = lm.model.config.vocab_size
    long = random_prompts(6, vocab, 7)
    prompts = [" ".join(p.split()[: 8 + 4 * i]) for i, p in enumerate(long)]  # 8..28 tokens: left padding
    layer = lm.num_layers // 2
    steer = [[actadd(layer, 4.0)], None, [actadd(0, -2.0)], None, [actadd(layer, 4.0)], [actadd(1, 1.0)]]
    out = {"rows": len(prompts), "new_tokens": 24, "paths": {}}
    for position in ("front", "all"):
        want = lm.complete(prompts, max_new_tokens=24, steer=steer, position=position, decode="eager", **SAMPLING)
        for path in ("static", "compiled"):
            started = time.perf_counter()
            got = lm.complete(prompts, max_new_tokens=24, steer=steer, position=position, decode=path, **SAMPLING)
            out["paths"][f"{path}/{position}"] = {
                "rows_identical_to_generate": same_rows(got, want),
                "decode": lm.last_generation.decode,
                "reason": lm.last_generation.reason,
                "first_call_s": time.perf_counter() - started,
            }
    # float32 batch composition on the GPU: the same 16 rows batched 16, 4 and 1
    rows = random_prompts(16, vocab, 8)
    full = lm.complete(rows, max_new_tokens=24, batch_size=16, decode="static", **SAMPLING)
    for size in (4, 1):
        part = lm.complete(rows, max_new_tokens=24, batch_size=size, decode="static", **SAMPLING)
        out[f"float32_rows_identical_batch16_vs_{size}"] = same_rows(full, part)
    log("C " + json.dumps(out, default=str))
    del lm
    torch.cuda.empty_cache() if device == "cuda" else None
    return out


def part_s(lm, args, log) -> dict:
    """The sampler alone on random logits [rows, vocab]: ms per step and agreement with the processors.
    With several `--radix-bits` splits each is compiled and timed; the engine's own split is restored after."""
    from actadd_notes.steering import sampling as sampling_module

    engine_bits = dict(sampling_module._RADIX_BITS)
    try:
        return _part_s(lm, args, log)
    finally:
        sampling_module._RADIX_BITS.update(engine_bits)
        torch._dynamo.reset()


def _part_s(lm, args, log) -> dict:
    vocab = lm.model.config.vocab_size
    device = lm.device
    sampling = Sampling(**SAMPLING)
    out = {}
    for spread_name, spread in (("flat", 1.0), ("peaked", 8.0)):
        for batch in args.sampler_batches:
            gen = torch.Generator(device=device).manual_seed(batch)
            logits = torch.randn(batch, vocab, device=device, generator=gen) * spread
            ids = torch.randint(0, vocab, (batch, PROMPT_LEN + 64), device=device, generator=gen)
            pads = [0] * batch
            seeds = torch.arange(batch, device=device)
            positions = torch.full((batch,), ids.shape[1], device=device)
            counts = token_counts(ids, torch.zeros(batch, dtype=torch.int64, device=device), logits)
            procs = logits_processors(sampling, list(range(batch)), pads)
            want = procs(ids, logits.clone()).argmax(-1)

            def fast(method, logits=logits, counts=counts, seeds=seeds, positions=positions):
                return sample_tokens(
                    logits, sampling, seeds=seeds, positions=positions, counts=counts, top_p_method=method
                )

            variants = {
                "processors": lambda procs=procs, ids=ids, logits=logits: procs(ids, logits.clone()).argmax(-1),
                "sort_eager": lambda: fast("sort"),
            }
            for method in args.sampler_methods:
                if method == "triton" and device.type != "cuda" and not os.environ.get("TRITON_INTERPRET"):
                    continue  # Triton kernels need a GPU, or the interpreter on a CPU
                variants[f"{method}_eager"] = lambda method=method: fast(method)
            entry = {}
            for method in (
                args.sampler_methods if device.type == "cuda" and batch in args.compiled_sampler_batches else ()
            ):
                splits = args.radix_bits if method in ("radix", "triton") else [None]
                for bits in splits:
                    name = method if bits is None or len(splits) == 1 else f"{method}{'-'.join(map(str, bits))}"
                    compile_variant(name, method, bits, fast, batch, entry, variants, out, spread_name, args, log)
            for name, fn in variants.items():
                for _ in range(2):
                    got = fn()
                dt, got = timed(lambda fn=fn: [fn() for _ in range(10)][-1])
                entry[f"{name}_ms"] = 1000 * dt / 10
                entry[f"{name}_agree"] = float((got == want).float().mean())
            out[f"{spread_name}/{batch}"] = entry
            log(f"S {spread_name} batch {batch}: " + json.dumps({k: round(v, 4) for k, v in entry.items()}))
    return out


def compile_variant(name, method, bits, fast, batch, entry, variants, out, spread_name, args, log) -> None:
    """Compile `fast(method)` (radix or triton with the digit split `bits`), capture it as a CUDA graph, add
    both to `variants`; the split is a module constant read at trace time, so each split compiles afresh."""
    from actadd_notes.steering import sampling as sampling_module

    if bits is not None:
        sampling_module._RADIX_BITS[method] = tuple(bits)
        torch._dynamo.reset()
    device = torch.device("cuda")
    compiled = torch.compile(functools.partial(fast, method), fullgraph=True, dynamic=False)
    started = time.perf_counter()
    compiled()
    sync()
    entry[f"{name}_compile_s"] = time.perf_counter() - started
    if bits is not None:  # the plain compiled call re-checks the constant: keep it at this split
        variants[f"{name}_compiled"] = lambda compiled=compiled, bits=tuple(bits): (
            sampling_module._RADIX_BITS.__setitem__(method, bits),
            compiled(),
        )[1]
    else:
        variants[f"{name}_compiled"] = compiled
    static_out = torch.empty(batch, dtype=torch.int64, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        compiled()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out.copy_(compiled())
    variants[f"{name}_compiled_graph"] = lambda graph=graph, static_out=static_out: (
        graph.replay(),
        static_out,
    )[1]
    if batch == max(args.compiled_sampler_batches):
        out[f"profile/{spread_name}/{batch}/{name}"] = kernel_table(compiled, log)


def kernel_table(fn, log, rows: int = 14) -> str:
    """The CUDA kernels of five calls of `fn`, by total device time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        sync()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)
    log("profile:\n" + table)
    return table


def part_p(lm, args, log) -> dict:
    """Decode steps alone: replay a bucket's captured graph (ms per step), and its kernels (profiled)."""
    vocab = lm.model.config.vocab_size
    out: dict = {}
    if lm.device.type != "cuda":
        return {"skipped": "no CUDA graphs on this device"}
    for path in ("compiled", "static"):
        if path not in args.paths:
            continue
        for batch in args.step_batches:
            prompts = random_prompts(1, vocab, seed=5) * batch
            steer = [[actadd(lm.num_layers // 2, 4.0)]] * batch
            run_complete(lm, prompts, decode=path, new=args.new_tokens, steer=steer)
            decoder = lm._decoders[path]
            bucket = decoder._buckets[next(reversed(decoder._buckets))]
            sampling = Sampling(**SAMPLING)
            graph = bucket.graphs[sampling]
            position = bucket.buffers.position

            def replay(graph=graph, position=position):
                with torch.inference_mode():
                    position.fill_(PROMPT_LEN - 1)  # 20 steps from the prompt's end stay inside the bucket
                for _ in range(20):
                    graph.replay()

            replay()
            times = [timed(replay)[0] / 20 for _ in range(5)]
            out[f"{path}/{batch}"] = {
                "bucket": [bucket.batch, bucket.length],
                "step_ms": stats([1000 * t for t in times]),
            }
            log(
                f"P {path} batch {batch} (bucket {bucket.batch}x{bucket.length}): "
                f"{1000 * statistics.median(times):.2f} ms/step"
            )
            if path == "compiled" and batch == max(args.step_batches):

                def steps(bucket=bucket, sampling=sampling):
                    bucket.buffers.position.fill_(PROMPT_LEN - 1)
                    with torch.inference_mode(), bucket.stepping() as additive:
                        for _ in range(3):
                            bucket.step(sampling, additive)

                out[f"profile/{path}/{batch}"] = kernel_table(steps, log, rows=18)
    return out


def interleaved(fns: dict, reps: int, log, label: str) -> dict:
    """Each fn once to warm up (its time reported as first_s), then `reps` rounds in rotating order."""
    out = {name: {"first_s": None, "times": []} for name in fns}
    results = {}
    for name, fn in fns.items():
        dt, results[name] = timed(fn)
        out[name]["first_s"] = dt
    names = list(fns)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            dt, _ = timed(fns[name])
            out[name]["times"].append(dt)
    summary = {name: {"first_s": v["first_s"], **stats(v["times"])} for name, v in out.items()}
    log(f"{label}: " + ", ".join(f"{n} {s['median']:.4f}s (first {s['first_s']:.1f}s)" for n, s in summary.items()))
    return summary, results


def part_a(lm, args, log, floor) -> dict:
    vocab = lm.model.config.vocab_size
    prompt = random_prompts(1, vocab, seed=1)
    steer = actadd(lm.num_layers // 2, 4.0)
    out = {}
    for path in args.paths:
        fns = {
            "plain": lambda path=path: run_complete(lm, prompt, decode=path, new=args.new_tokens),
            "steered": lambda path=path: run_complete(lm, prompt, decode=path, new=args.new_tokens, steer=steer),
        }
        reps = args.reps_eager if path == "eager" else args.reps
        summary, results = interleaved(fns, reps, log, f"A batch 1 {path}")
        lengths_ok(results["plain"] + results["steered"], args.new_tokens)
        r = ratios(summary["steered"]["values"], summary["plain"]["values"])
        tok_s = args.new_tokens / summary["steered"]["median"]
        out[path] = {
            **summary,
            "decode": lm.last_generation.decode,
            "reason": lm.last_generation.reason,
            "ratio_steered_over_plain": stats(r),
            "steered_tok_s": tok_s,
            "plain_tok_s": args.new_tokens / summary["plain"]["median"],
            "roofline_fraction_measured_floor": tok_s / floor,
            "roofline_fraction_issue_floor": tok_s / ISSUE_FLOOR_TOK_S,
            "steering_changed_tokens": results["plain"][0].token_ids != results["steered"][0].token_ids,
        }
        log(
            f"A {path}: steered {tok_s:.1f} tok/s ({tok_s / ISSUE_FLOOR_TOK_S:.0%} of 263), steered/plain "
            f"{statistics.median(r):.4f} [{min(r):.3f}, {max(r):.3f}]"
        )
    return out


def part_l(lm, args, log, floor) -> dict:
    vocab = lm.model.config.vocab_size
    prompt = random_prompts(1, vocab, seed=2)
    out = {}
    for path in ("compiled", "static"):
        if path not in args.paths:
            continue
        for new in args.lengths:
            fns = {"plain": lambda path=path, new=new: run_complete(lm, prompt, decode=path, new=new)}
            summary, results = interleaved(fns, max(3, args.reps // 2), log, f"L {path} {new} tokens")
            lengths_ok(results["plain"], new)
            tok_s = new / summary["plain"]["median"]
            out[f"{path}/{new}"] = {
                **summary["plain"],
                "tok_s": tok_s,
                "roofline_fraction_measured_floor": tok_s / floor,
            }
    for path in ("compiled", "static"):  # the marginal cost of one more token, prefill and set-up excluded
        if f"{path}/{args.lengths[0]}" in out and f"{path}/{args.lengths[-1]}" in out:
            a, b = out[f"{path}/{args.lengths[0]}"]["median"], out[f"{path}/{args.lengths[-1]}"]["median"]
            per_token = (b - a) / (args.lengths[-1] - args.lengths[0])
            out[f"{path}/marginal"] = {
                "ms_per_token": 1000 * per_token,
                "tok_s": 1 / per_token,
                "of_floor": 1 / per_token / floor,
            }
            log(
                f"L {path}: marginal {1000 * per_token:.2f} ms/token = {1 / per_token:.0f} tok/s "
                f"({1 / per_token / floor:.0%} of floor)"
            )
    return out


def part_b(lm, args, log) -> dict:
    vocab = lm.model.config.vocab_size
    layers, coeffs = sweep_settings(lm, args)
    settings = [(layer, coeff) for layer in layers for coeff in coeffs]
    out = {}
    for batch in args.batches:
        sweep = batch == args.sweep_rows
        if sweep:
            prompt = random_prompts(1, vocab, seed=12345)[0]
            prompts = [prompt] * batch
            seeds = [s for _ in settings for s in range(args.samples)]
            steer = [[actadd(layer, coeff)] for layer, coeff in settings for _ in range(args.samples)]
        else:
            prompts = random_prompts(batch, vocab, seed=batch)
            seeds = list(range(batch))
            steer = actadd(lm.num_layers // 2, 4.0)
        for path in args.paths:
            if path == "eager" and batch not in args.eager_batches:
                continue
            common = {"decode": path, "new": args.new_tokens, "seeds": seeds}
            fns = {
                "plain": lambda prompts=prompts, common=common: run_complete(lm, prompts, **common),
                "steered": lambda prompts=prompts, common=common, steer=steer: run_complete(
                    lm, prompts, steer=steer, **common
                ),
            }
            reps = args.reps_eager if path == "eager" else args.reps_b
            summary, results = interleaved(fns, reps, log, f"B batch {batch} {path}")
            lengths_ok(results["plain"] + results["steered"], args.new_tokens)
            r = ratios(summary["steered"]["values"], summary["plain"]["values"])
            out[f"{path}/{batch}"] = {
                **summary,
                "sweep": sweep,
                "ratio_steered_over_plain": stats(r),
                "steered_new_tok_s": batch * args.new_tokens / summary["steered"]["median"],
                "plain_new_tok_s": batch * args.new_tokens / summary["plain"]["median"],
                "rows_changed_by_steering": 1 - same_rows(results["plain"], results["steered"]),
                "decode": lm.last_generation.decode,
                "batches": lm.last_generation.batches,
            }
            log(
                f"B {path} {batch}: steered {out[f'{path}/{batch}']['steered_new_tok_s']:.0f} new tok/s, "
                f"steered/plain {statistics.median(r):.4f} [{min(r):.3f}, {max(r):.3f}]"
            )
    return out


def part_d(lm, args, log) -> dict:
    """The same sweep batched three ways: how far do its statistics move in bf16?"""
    vocab = lm.model.config.vocab_size
    layers, coeffs = sweep_settings(lm, args)
    settings = [None] + [(layer, coeff) for layer in layers for coeff in coeffs]
    prompt = random_prompts(1, vocab, seed=4242)[0]
    rows = len(settings) * args.samples
    seeds = [s for _ in settings for s in range(args.samples)]
    steer = [None if s is None else [actadd(*s)] for s in settings for _ in range(args.samples)]
    runs = {}
    for size in args.composition_batches:
        started = time.perf_counter()
        runs[size] = run_complete(
            lm, [prompt] * rows, decode="compiled", new=args.new_tokens, seeds=seeds, steer=steer, batch_size=size
        )
        log(f"D batch {size}: {time.perf_counter() - started:.1f}s, batches {lm.last_generation.batches}")

    def score(c) -> float:  # a token statistic standing in for a metric: share of ids in the lower half
        return sum(t < vocab // 2 for t in c.token_ids) / len(c.token_ids)

    def table(completions):
        means, halfwidths = [], []
        for index in range(len(settings)):
            values = [score(c) for c in completions[index * args.samples : (index + 1) * args.samples]]
            means.append(statistics.mean(values))
            halfwidths.append(1.96 * statistics.stdev(values) / len(values) ** 0.5)
        return means, halfwidths

    reference = args.composition_batches[0]
    base_means, _ = table(runs[reference])
    out = {"rows": rows, "settings": len(settings) - 1, "reference_batch": reference, "by_batch": {}}
    for size, completions in runs.items():
        means, half = table(completions)
        deltas = [abs(a - b) for a, b in zip(means, base_means)]
        best = max(range(1, len(settings)), key=lambda i: means[i] - means[0])
        out["by_batch"][str(size)] = {
            "rows_identical_to_reference": same_rows(completions, runs[reference]),
            "setting_mean_abs_change_max": max(deltas),
            "setting_mean_abs_change_median": statistics.median(deltas),
            "ci_halfwidth_median": statistics.median(half),
            "best_setting": list(settings[best]),
            "best_difference_vs_baseline": means[best] - means[0],
            "baseline_mean": means[0],
        }
        log(f"D {size}: " + json.dumps(out["by_batch"][str(size)]))
    return out


def part_h(lm, args, log, floor) -> dict:
    """transformers' own static cache + compile, greedy, as issue 8 measured it (no steering)."""
    vocab = lm.model.config.vocab_size
    prompt = random_prompts(1, vocab, seed=3)
    ids, mask, _ = lm._left_pad([lm.encode(prompt[0]).ids])
    new = 128

    def hf_static():
        with torch.inference_mode():
            return lm.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                do_sample=False,
                cache_implementation="static",
                pad_token_id=lm.pad_id,
            )

    def ours():
        return run_complete(lm, prompt, decode="compiled", new=new, temperature=0)

    fns = {"hf_static_compiled": hf_static, "ours_compiled_greedy": ours}
    summary, _ = interleaved(fns, 4, log, "H greedy 128")
    return {
        name: {**s, "tok_s": new / s["median"], "of_floor": new / s["median"] / floor} for name, s in summary.items()
    }


# ---------------------------------------------------------------------------- main
PARTS = {
    "R": lambda lm, args, log, floor: part_r(lm, args, log),
    "P": lambda lm, args, log, floor: part_p(lm, args, log),
    "S": lambda lm, args, log, floor: part_s(lm, args, log),
    "A": part_a,
    "L": part_l,
    "B": lambda lm, args, log, floor: part_b(lm, args, log),
    "D": lambda lm, args, log, floor: part_d(lm, args, log),
    "H": part_h,
}
BUDGET_S = {"P": 40, "R": 10, "C": 60, "S": 60, "A": 120, "L": 100, "B": 200, "D": 45, "H": 150}  # rough, for skipping


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="R,A,B,S,L,D,C,H")
    parser.add_argument("--paths", default="compiled,static,eager")
    parser.add_argument("--tiny", action="store_true", help="small configs, few repetitions, CPU-friendly")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--reps-b", type=int, default=4)
    parser.add_argument("--reps-eager", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batches", default="16,64,256,560")
    parser.add_argument("--eager-batches", default="560")
    parser.add_argument("--lengths", default="32,128,512")
    parser.add_argument("--sampler-batches", default="1,16,64,560")
    parser.add_argument("--compiled-sampler-batches", default="1,560")
    parser.add_argument("--sampler-methods", default="radix,triton")
    parser.add_argument(
        "--radix-bits", default="", help="digit splits to time, e.g. 11-11-10,16-16 (default: engine's)"
    )
    parser.add_argument("--step-batches", default="1,560")
    parser.add_argument("--composition-batches", default="576,64,16")
    parser.add_argument("--hard-s", type=float, default=570.0, help="parts that would end after this are skipped")
    parser.add_argument("--sampler-only", action="store_true", help="part S on random logits, no model built")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    args.paths = args.paths.split(",")
    args.batches, args.eager_batches, args.lengths = ints(args.batches), ints(args.eager_batches), ints(args.lengths)
    args.sampler_batches = ints(args.sampler_batches)
    args.compiled_sampler_batches = ints(args.compiled_sampler_batches)
    args.composition_batches = ints(args.composition_batches)
    args.sampler_methods = args.sampler_methods.split(",")
    splits = [split for split in args.radix_bits.split(",") if split]
    args.radix_bits = [tuple(int(b) for b in split.split("-")) for split in splits] or [None]
    args.step_batches = ints(args.step_batches)
    if args.tiny:
        args.reps, args.reps_b, args.reps_eager, args.samples = 2, 1, 1, 2
        args.new_tokens, args.lengths = 8, [4, 12]
        args.batches, args.eager_batches = [4, 70], [70]
        args.sampler_batches, args.compiled_sampler_batches = [1, 8], [1]
        args.composition_batches = [72, 16]
        args.step_batches = [1, 8]
    args.sweep_rows = 35 * args.samples
    return args


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    out_path = Path(args.out) if args.out else Path(os.environ.get("OUT") or "/tmp") / "gpu_decode.json"
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - started:5.0f}s] {message}", flush=True)

    summary = {"environment": environment(command), "settings": {**vars(args), "dtype": str(dtype)}, "parts": {}}
    log(json.dumps(summary["environment"]))

    def save() -> None:
        out_path.write_text(json.dumps(summary, indent=1, default=str))

    lm = None
    floor = ISSUE_FLOOR_TOK_S
    for part in args.parts.split(","):
        if time.perf_counter() - started + BUDGET_S.get(part, 60) > args.hard_s:
            log(f"{part}: skipped, not enough time left")
            summary["parts"][part] = "skipped: time"
            continue
        try:
            if part == "C":
                summary["parts"]["C"] = part_c(args, log, device)
            else:
                if lm is None and args.sampler_only:  # part S needs only the vocabulary and the device
                    vocab = model_config("llama-3-8b", args.tiny).vocab_size
                    lm = SimpleNamespace(
                        model=SimpleNamespace(config=SimpleNamespace(vocab_size=vocab)), device=torch.device(device)
                    )
                if lm is None:
                    t0 = time.perf_counter()
                    lm = build(args.tiny, device, dtype)
                    summary["build_s"] = time.perf_counter() - t0
                    log(f"built the 8B-shaped model in {summary['build_s']:.1f}s")
                summary["parts"][part] = PARTS[part](lm, args, log, floor)
                if part == "R":
                    floor = summary["parts"]["R"]["floor_tok_s_batch1"]
        except Exception as error:  # a part that fails leaves the others' numbers
            summary["parts"][part] = {"error": repr(error), "traceback": traceback.format_exc()[-4000:]}
            log(f"{part} failed: {error!r}\n{traceback.format_exc()[-2500:]}")
        if device == "cuda":
            summary["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        save()
    summary["wall_s"] = time.perf_counter() - started
    save()
    print_table(summary)
    print(f"wrote {out_path}")
    return 0


def _entries(summary: dict, part: str) -> list[tuple[str, dict]]:
    value = summary["parts"].get(part)
    return [(k, v) for k, v in value.items() if isinstance(v, dict)] if isinstance(value, dict) else []


def print_table(summary: dict) -> None:
    print("\npart what                         value")
    for path, e in _entries(summary, "A"):
        if "steered_tok_s" in e:
            r = e["ratio_steered_over_plain"]
            print(
                f"A    batch 1 {path:9s} steered tok/s {e['steered_tok_s']:8.1f}  "
                f"s/p {r['median']:.4f} ({r['min']:.3f}-{r['max']:.3f})"
            )
    for key, e in _entries(summary, "B"):
        if "steered_new_tok_s" in e:
            r = e["ratio_steered_over_plain"]
            print(
                f"B    {key:14s} new tok/s {e['steered_new_tok_s']:8.0f}  "
                f"s/p {r['median']:.4f} ({r['min']:.3f}-{r['max']:.3f})"
            )
    for key, e in _entries(summary, "L"):
        if "tok_s" in e:
            print(f"L    {key:14s} tok/s {e['tok_s']:8.1f}")
    for key, e in _entries(summary, "S"):
        print(f"S    {key:14s} " + " ".join(f"{k[:-3]}={v:.3f}" for k, v in e.items() if k.endswith("_ms")))
    for key, e in _entries(summary, "H"):
        if "tok_s" in e:
            print(f"H    {key:22s} tok/s {e['tok_s']:8.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
