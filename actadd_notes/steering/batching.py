"""How many rows share one forward pass: a plan computed from the request and the device's model and size.

In bf16 on a GPU a row's logits depend on what shares its batch (matrix products are blocked by
batch shape), so the plan is a function only of what a re-run sees again: the number of rows, the
prompt length, `max_new_tokens`, the device's name and *total* memory, and the model's shape and
dtype — never of the memory that happens to be free. Out-of-memory halving (in `lm.py`) remains
the safety net and is recorded when it fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actadd_notes.steering.decode import batch_bucket, length_bucket

GIB = 2**30
CPU_ROWS = 64  # the CPU benchmark's batch (BENCHMARKS.md): both cores stay busy, memory is no constraint
_USABLE = 0.90  # of the device's total memory
_RESERVED = 2 * GIB  # CUDA context, cuBLAS workspaces, captured graphs' pools
_SAMPLER_BYTES_PER_TOKEN = 48  # float32 logits and counts, prefill logits, the sampler's int64 and float temporaries


@dataclass(frozen=True)
class DeviceSpec:
    """What a batch plan may depend on: the kind, the model name and the total memory of a device."""

    kind: str
    name: str
    total_bytes: int

    @classmethod
    def of(cls, device: torch.device) -> DeviceSpec:
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            return cls("cuda", props.name, int(props.total_memory))
        if device.type == "mps":
            return cls("mps", "mps", int(torch.mps.recommended_max_memory()))
        return cls(device.type, device.type, 0)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a row's memory: weights, KV cache per position, activations, vocabulary."""

    layers: int
    hidden: int
    heads: int
    kv_width: int  # key-value heads × head dim
    intermediate: int
    vocab: int
    weight_bytes: int
    dtype_bytes: int

    @classmethod
    def of(cls, model: Any, layers: int) -> ModelShape:
        config = model.config
        hidden = model.get_input_embeddings().weight.shape[-1]
        heads = _first(config, ("num_attention_heads", "n_head"), 1)
        kv_heads = _first(config, ("num_key_value_heads",), heads)
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        output = model.get_output_embeddings()
        vocab = output.weight.shape[0] if output is not None else model.get_input_embeddings().weight.shape[0]
        return cls(
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_width=kv_heads * head_dim,
            intermediate=_first(config, ("intermediate_size", "n_inner", "ffn_dim"), 4 * hidden),
            vocab=vocab,
            weight_bytes=weights,
            dtype_bytes=model.get_input_embeddings().weight.element_size(),
        )

    def activation_bytes(self, positions: int) -> int:
        """One row's transient activations over `positions` tokens (a block's inputs, attention scores, MLP)."""
        width = (4 * self.hidden + 3 * self.intermediate) * self.dtype_bytes * 2
        return positions * width + self.heads * positions * positions * 4


def _first(config: object, names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


@dataclass(frozen=True)
class BatchPlan:
    """Rows per forward pass, in order, and what the limit was computed from."""

    sizes: tuple[int, ...]
    limit: int
    basis: str

    def slices(self) -> list[slice]:
        out, start = [], 0
        for size in self.sizes:
            out.append(slice(start, start + size))
            start += size
        return out


def balanced(rows: int, limit: int) -> tuple[int, ...]:
    """`rows` in the fewest batches of at most `limit`, sizes differing by at most one (earlier ones larger)."""
    if rows == 0:
        return ()
    count = -(-rows // limit)
    base, extra = divmod(rows, count)
    return tuple(base + 1 if index < extra else base for index in range(count))


def fixed(rows: int, size: int) -> BatchPlan:
    """Consecutive batches of `size` rows (the last one shorter), as asked."""
    sizes = tuple(min(size, rows - start) for start in range(0, rows, size))
    return BatchPlan(sizes, size, f"batch_size {size}")


def _fitting(budget: int, per_row: int) -> int:
    """The most rows whose padded batch bucket fits `budget` (at least 1)."""
    rows = max(1, budget // max(per_row, 1))
    while rows > 1 and batch_bucket(rows) * per_row > budget:
        rows -= 1
    return rows


def _limit(device: DeviceSpec, shape: ModelShape, per_row: int) -> tuple[int, str]:
    if device.kind == "cpu" or device.total_bytes == 0:
        return CPU_ROWS, f"{device.kind}: {CPU_ROWS} rows"
    budget = int(device.total_bytes * _USABLE) - shape.weight_bytes - _RESERVED
    rows = _fitting(budget, per_row)
    basis = (
        f"{device.name}, {device.total_bytes / GIB:.1f} GiB total, weights {shape.weight_bytes / GIB:.1f} GiB, "
        f"{per_row / 2**20:.1f} MiB per row: up to {rows} rows"
    )
    return rows, basis


def generation_plan(
    rows: int, prompt_length: int, max_new_tokens: int, shape: ModelShape, device: DeviceSpec
) -> BatchPlan:
    """Batches for generating `max_new_tokens` after prompts of at most `prompt_length` tokens."""
    kv_per_position = 2 * shape.layers * shape.kv_width * shape.dtype_bytes
    static = kv_per_position * length_bucket(prompt_length + max_new_tokens)
    prefill = kv_per_position * prompt_length + shape.activation_bytes(prompt_length)
    per_row = static + prefill + _SAMPLER_BYTES_PER_TOKEN * shape.vocab
    limit, basis = _limit(device, shape, per_row)
    return BatchPlan(balanced(rows, limit), limit, f"auto ({basis})")


def scoring_plan(rows: int, length: int, kept: int, shape: ModelShape, device: DeviceSpec) -> BatchPlan:
    """Batches for scoring sequences of at most `length` tokens, logits kept at the last `kept` positions."""
    per_row = shape.activation_bytes(length) + kept * shape.vocab * (shape.dtype_bytes + 8)
    limit, basis = _limit(device, shape, per_row)
    return BatchPlan(balanced(rows, limit), limit, f"auto ({basis})")
