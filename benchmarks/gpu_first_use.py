"""What a fresh process pays the first time it uses each kind of GPU work, and whether that can overlap
the import of transformers.

`actadd-notes run` on the 8B shape spent 1.1–1.9 s in its first model forward (two short prompts, the
steering vector) against 0.07–0.11 s in its second, and 1.5–2.4 s preparing its first decode bucket
(two eager steps and a graph capture, about 50 ms of GPU work). This script times, in fresh processes,
each first use against its second: a bf16 matmul, an elementwise kernel, SDPA (prefill: causal; decode:
an additive mask), the Triton sampler, a CUDA graph capture, and the first and second forward of a
2-layer model of the 8B width; then (`--overlap`) the same first uses run on a thread while the main
thread imports transformers.

Device:  PYTHONPATH=. python3 benchmarks/gpu_first_use.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, ROWS = 49152, 4096, 32, 8, 128, 576


def timed(stamps: dict, name: str, work) -> None:
    import torch

    for attempt in ("first", "second"):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        work()
        torch.cuda.synchronize()
        stamps[f"{name}_{attempt}_s"] = round(time.perf_counter() - begin, 4)


def first_uses(stamps: dict) -> None:
    """Each kind of work the product's first forward and first decode step run, twice."""
    import torch
    import torch.nn.functional as F

    device = "cuda"
    a = torch.randn(64, HIDDEN, device=device, dtype=torch.bfloat16)
    w = torch.randn(HIDDEN, HIDDEN, device=device, dtype=torch.bfloat16)
    timed(stamps, "linear", lambda: F.linear(a, w))
    timed(stamps, "elementwise", lambda: (a.float().pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt())
    q = torch.randn(2, HEADS, 8, HEAD_DIM, device=device, dtype=torch.bfloat16)
    kv = torch.randn(2, KV_HEADS, 8, HEAD_DIM, device=device, dtype=torch.bfloat16)
    timed(stamps, "sdpa_prefill", lambda: F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True))
    qd = torch.randn(ROWS, HEADS, 1, HEAD_DIM, device=device, dtype=torch.bfloat16)
    kd = torch.randn(ROWS, KV_HEADS, 128, HEAD_DIM, device=device, dtype=torch.bfloat16)
    mask = torch.zeros(ROWS, 1, 1, 128, device=device, dtype=torch.bfloat16)
    timed(stamps, "sdpa_decode", lambda: F.scaled_dot_product_attention(qd, kd, kd, attn_mask=mask, enable_gqa=True))
    from actadd_notes.steering.sampling import Sampling, sample_tokens

    logits = torch.randn(ROWS, VOCAB, device=device)
    seeds = torch.arange(ROWS, device=device)
    positions = torch.full((ROWS,), 5, device=device)
    counts = torch.zeros_like(logits)
    sampling = Sampling(temperature=1.0, top_p=0.3, freq_penalty=1.0)
    timed(
        stamps,
        "sampler_triton",
        lambda: sample_tokens(logits, sampling, seeds=seeds, positions=positions, counts=counts, top_p_method="triton"),
    )

    def capture() -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            F.linear(a, w)
        graph.replay()

    timed(stamps, "graph_capture", capture)


def model_forwards(stamps: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=14336,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(0, VOCAB, (2, 6), device="cuda")
    with torch.no_grad():
        timed(stamps, "model_forward", lambda: model(input_ids=ids))


def probe(overlap: bool) -> dict:
    stamps: dict = {"overlap": overlap}
    begin = time.perf_counter()
    import torch

    stamps["import_torch_s"] = round(time.perf_counter() - begin, 3)
    begin = time.perf_counter()
    torch.cuda.init()
    torch.empty(1, device="cuda")
    stamps["cuda_context_s"] = round(time.perf_counter() - begin, 3)
    thread = None
    if overlap:
        thread_stamps: dict = {}
        stamps["thread"] = thread_stamps

        def warm() -> None:
            begin = time.perf_counter()
            first_uses(thread_stamps)
            thread_stamps["all_s"] = round(time.perf_counter() - begin, 3)

        thread = threading.Thread(target=warm)
        thread.start()
    begin = time.perf_counter()
    import transformers.models.llama.modeling_llama  # noqa: F401

    stamps["import_transformers_s"] = round(time.perf_counter() - begin, 3)
    if thread is not None:
        begin = time.perf_counter()
        thread.join()
        stamps["join_wait_s"] = round(time.perf_counter() - begin, 3)
    else:
        begin = time.perf_counter()
        first_uses(stamps)
        stamps["first_uses_all_s"] = round(time.perf_counter() - begin, 3)
    model_forwards(stamps)
    return stamps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["plain", "overlap"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(probe(args.child == "overlap")))
        return 0
    results = []
    for _ in range(args.rounds):
        for mode in ("plain", "overlap"):
            begin = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode], capture_output=True, text=True, env=os.environ
            )
            try:
                entry = json.loads(done.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                entry = {"mode": mode, "stderr": done.stderr[-2000:]}
            entry["wall_s"] = round(time.perf_counter() - begin, 3)
            results.append(entry)
            print(json.dumps(entry), flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_first_use.json"), "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
