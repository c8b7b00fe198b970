"""Check on a GPU that the engine's safetensors reader (steering/checkpoint.py) loads what transformers loads.

CI has no GPU, so the pinned buffers, per-thread CUDA streams and the staging copies of a cast are checked
here: a Llama-3-layout model with the 8B model's vocabulary and width (so the embedding is 1 GB in bf16, 16
pieces of 64 MB) is saved in bf16 and in float32, sharded, and loaded into bf16 on the card both by
`load_model` (the engine's reader) and by `from_pretrained(device_map="cuda")`; every parameter and buffer
must be bit-identical, and the logits too.

Device:  PYTHONPATH=. python3 benchmarks/gpu_checkpoint.py --tokenizer build/gpu_carry/smollm2-tokenizer
CPU dry run:  .venv/bin/python benchmarks/gpu_checkpoint.py --tokenizer DIR --tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from actadd_notes.steering import checkpoint
from actadd_notes.steering.models import load_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    width = 256 if args.tiny else 4096
    config = LlamaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=32 if not args.tiny else 4,
        num_key_value_heads=8 if not args.tiny else 2,
        vocab_size=len(tokenizer) if args.tiny else 128256,
        rope_theta=500000.0,
    )
    report = {}
    for saved_dtype in (torch.bfloat16, torch.float32):
        folder = Path(tempfile.mkdtemp()) / "model"
        torch.manual_seed(0)
        with torch.device(device):
            AutoModelForCausalLM.from_config(config, dtype=saved_dtype).save_pretrained(folder, max_shard_size="2GB")
        tokenizer.save_pretrained(folder)
        started = time.perf_counter()
        engine = load_model(str(folder), device=device, dtype="bfloat16").model
        engine_s = time.perf_counter() - started
        read_directly = isinstance(checkpoint.plan(engine, folder), list)
        started = time.perf_counter()
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map=device).eval()
        reference_s = time.perf_counter() - started
        mismatched = [
            name
            for name, tensor in {**dict(reference.named_parameters()), **dict(reference.named_buffers())}.items()
            if not torch.equal(tensor, {**dict(engine.named_parameters()), **dict(engine.named_buffers())}[name])
        ]
        ids = torch.randint(0, config.vocab_size, (4, 16), device=device)
        with torch.no_grad():
            logits_equal = torch.equal(engine(ids).logits, reference(ids).logits)
        entry = {
            "read_directly": read_directly,
            "tensors": len(list(reference.named_parameters())),
            "mismatched": mismatched,
            "logits_equal": logits_equal,
            "engine_load_s": engine_s,
            "transformers_load_s": reference_s,
        }
        report[f"saved {str(saved_dtype).removeprefix('torch.')}, loaded bfloat16"] = entry
        print(json.dumps(entry), flush=True)
        del engine, reference
        if device == "cuda":
            torch.cuda.empty_cache()
    ok = all(e["read_directly"] and not e["mismatched"] and e["logits_equal"] for e in report.values())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
