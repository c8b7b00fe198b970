"""The engine's own decode loop: a static KV cache, one step per token, compiled and graph-captured on CUDA.

transformers' `generate` runs every decode step as eager kernels launched from Python, with a
host synchronisation and the logits processors in between; at batch 1 on a large GPU that leaves
most of the time to the host. Here:

* **prefill** is the model's forward as `generate` calls it (eager, a `DynamicCache`, the steering
  hooks of `hooks.py`); its keys and values are then copied into the static buffers of one
  (batch, length) bucket;
* each **decode step** feeds one token per row through the model's own modules with a static cache
  object, an explicit [batch, 1, 1, length] mask (for models with sliding-window layers, one per
  layer type: a sliding layer's sees only its window) and positions counted from each row's left
  padding (sdpa with each group of query heads folded onto its key-value head), then picks the
  next token with `sample_tokens`. On CUDA both halves are captured together as one CUDA graph
  per bucket and sampling setting — eager kernels (`static`) or Inductor's (`compiled`) — so a
  step is one graph launch, and the host looks only every few steps whether all rows have ended;
* **steering** stays exact: front additions happen at prefill (decode steps never touch the
  prompt's positions); `position: all` reaches decode steps through a [layers, batch, d] buffer
  that a pre-hook on every block adds, zeros for unsteered rows and layers, so one captured step
  serves every setting.

`decode_support` names, in one line, why a model must decode with `generate` instead.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from actadd_notes.errors import ModelError
from actadd_notes.steering.hooks import delta_hooks, pre_hooks_installed
from actadd_notes.steering.sampling import Sampling, TopPMethod, sample_tokens, token_counts

DecodeMode = Literal["auto", "compiled", "static", "eager"]
DECODE_MODES: tuple[DecodeMode, ...] = ("auto", "compiled", "static", "eager")

# families whose decode steps are tested token for token against `generate` (tests/test_decode.py)
STATIC_FAMILIES = frozenset(
    {"gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"}
)
# families whose forward takes one mask per layer type, so that sliding-window layers decode past their
# window exactly (tests/test_families_round_two.py); the others fall back to `generate` there
WINDOWED_FAMILIES = frozenset({"gemma2", "gemma3_text"})

EOS_CHECK_STEPS = 8  # the host looks for finished rows every this many steps (each look is a synchronisation)
_ATTENTION = "actadd_decode"
_LENGTH_QUANTUM = 32


def batch_bucket(rows: int) -> int:
    """Static batch size for `rows`: powers of two up to 64, then multiples of 64 (≤ 1.6% padding past 256)."""
    if rows <= 64:
        return 1 << max(0, math.ceil(math.log2(rows)))
    return -(-rows // 64) * 64


def length_bucket(positions: int) -> int:
    """Static cache length for `positions` (prompt + new tokens): a multiple of 32."""
    return -(-positions // _LENGTH_QUANTUM) * _LENGTH_QUANTUM


def _own_hooks(model: Any) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) + int(hasattr(m, "_hf_hook")) for m in model.modules())


def decode_support(model: Any, positions: int) -> str | None:
    """None if the static loop can decode `positions` (prompt + new tokens) with this model; else why not."""
    config = model.config
    family = getattr(config, "model_type", type(model).__name__)
    if family not in STATIC_FAMILIES:
        return f"{family} is not among the families the static decode loop is tested on"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models decode with generate"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ("sdpa", "eager"):
        return f"attention implementation {attention!r} (the static loop runs sdpa or eager)"
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < positions and _sliding_window(config) is None:
        return f"{positions} positions exceed the sliding window of {window}"
    if _own_hooks(model):
        return (
            "the model carries hooks of its own (a steering block, device dispatch), which a captured step would skip"
        )
    if len({p.device for p in model.parameters()}) > 1:
        return "the model is spread over several devices"
    return None


def _sliding_window(config: Any) -> int | None:
    """The window of the model's sliding-window layers where the decode step masks them itself, else None."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if config.model_type in WINDOWED_FAMILIES and isinstance(window, int) and "sliding_attention" in layer_types:
        return window
    return None


def _default_top_p_method(device: torch.device, backend: str | None) -> TopPMethod:
    """On CUDA the Triton kernels (on an H200 at 560 rows 2.4–2.9 ms a step, against 18 for the eager sort
    and 3.5 for the compiled torch search); on the CPU the sort when steps run eagerly (as fast as any there,
    and transformers' op for op), the sort-free search when they are compiled."""
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        return "triton"
    return "sort" if backend is None else "radix"


class DecodeCompileError(RuntimeError):
    """Compiling the decode step or capturing it as a CUDA graph failed; the caller decodes with `generate`."""


# ------------------------------------------------------------------ what a decode step runs
class _StaticCache:
    """What the attention layers call during a decode step: write the new key and value at `position`
    (a [1] tensor, so a captured step serves every step) and attend over the whole buffer."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], position: torch.Tensor):
        self.keys, self.values, self.position = keys, values, position

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx].index_copy_(2, self.position, key_states)
        self.values[layer_idx].index_copy_(2, self.position, value_states)
        return self.keys[layer_idx], self.values[layer_idx]


@dataclass
class _Buffers:
    """The state a decode step reads and writes; every tensor keeps its address for the bucket's life."""

    keys: list[torch.Tensor]  # per layer [batch, kv heads, length, head dim]
    values: list[torch.Tensor]
    position: torch.Tensor  # [1] int64: cache slot of the token fed next
    tokens: torch.Tensor  # [batch, 1] int64: the token fed next
    pads: torch.Tensor  # [batch] int64: left padding of each row
    seeds: torch.Tensor  # [batch] int64
    logits: torch.Tensor  # [batch, vocab] float32: the last step's
    counts: torch.Tensor | None  # [batch, vocab] float32: occurrences so far (frequency penalty)
    out: torch.Tensor  # [batch, length] int64: the token sampled into each slot
    deltas: torch.Tensor  # [layers, batch, d]: `position: all` additions, model dtype


def _forward_step(model: Any, cache_arg: str, buffers: _Buffers, additive_mask: bool, window: int | None) -> None:
    """Feed `buffers.tokens` at slot `buffers.position`; the next logits land in `buffers.logits`. With a
    `window`, sliding-window layers see the slots after position − window only, as transformers' masks say."""
    slots = torch.arange(buffers.out.shape[1], device=buffers.pads.device)
    allowed = ((slots[None, :] >= buffers.pads[:, None]) & (slots[None, :] <= buffers.position))[:, None, None, :]
    dtype = buffers.keys[0].dtype
    full = _attention_mask(allowed, additive_mask, dtype)
    mask: torch.Tensor | dict[str, torch.Tensor] = full
    if window is not None:
        in_window = allowed & (slots > buffers.position - window)
        mask = {"full_attention": full, "sliding_attention": _attention_mask(in_window, additive_mask, dtype)}
    cache = _StaticCache(buffers.keys, buffers.values, buffers.position)
    output = model(
        input_ids=buffers.tokens,
        attention_mask=mask,
        position_ids=(buffers.position - buffers.pads)[:, None],
        use_cache=True,
        **{cache_arg: cache},
    )
    buffers.logits.copy_(output.logits[:, -1])


def _attention_mask(allowed: torch.Tensor, additive: bool, dtype: torch.dtype) -> torch.Tensor:
    """`allowed` as sdpa takes it, or as eager attention adds it to the scores (transformers' own masks)."""
    if not additive:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _sample_step(buffers: _Buffers, sampling: Sampling, top_p_method: TopPMethod, dense_noise: bool) -> None:
    """Sample from `buffers.logits` into the next slot and make it the token fed next."""
    slot = buffers.position + 1
    token = sample_tokens(
        buffers.logits,
        sampling,
        seeds=buffers.seeds,
        positions=slot - buffers.pads,
        counts=buffers.counts,
        top_p_method=top_p_method,
        dense_noise=dense_noise,
    )
    if buffers.counts is not None:
        buffers.counts.scatter_add_(1, token[:, None], torch.ones_like(buffers.logits[:, :1]))
    buffers.tokens.copy_(token[:, None])
    buffers.out.index_copy_(1, slot, token[:, None])
    buffers.position.copy_(slot)


def _grouped_query_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa for one new token per row, each group of query heads folded onto its key-value head.

    transformers' sdpa path repeats the keys and values per query head whenever there is a mask,
    which on a static cache moves 4× the cache (Llama-3) through memory every step."""
    batch, heads, new, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads * new, dim)
    output = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return output.reshape(batch, heads, new, value.shape[-1]).transpose(1, 2).contiguous(), None


@contextmanager
def _decode_attention(model: Any) -> Iterator[bool]:
    """Swap sdpa for `_grouped_query_attention` while decode steps run; yields whether masks are additive."""
    config = model.config
    original = config._attn_implementation
    if original != "sdpa":
        yield True
        return
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTENTION, _grouped_query_attention)
    config._attn_implementation = _ATTENTION
    try:
        yield False
    finally:
        config._attn_implementation = original


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ModelError(f"{type(cache).__name__} has no per-layer keys and values to copy into a static cache")
    return [(layer.keys, layer.values) for layer in layers]


# ------------------------------------------------------------------ buckets
class _Bucket:
    """Static buffers of one (batch, length) bucket, and the CUDA graphs captured on them."""

    def __init__(self, decoder: Decoder, batch: int, length: int, cache: Any, hidden: int, vocab: int):
        device, dtype = decoder.device, decoder.dtype
        zeros = functools.partial(torch.zeros, device=device)
        layers = _cache_tensors(cache)
        self.decoder = decoder
        self.batch, self.length = batch, length
        self.buffers = _Buffers(
            keys=[zeros(batch, k.shape[1], length, k.shape[3], dtype=k.dtype) for k, _ in layers],
            values=[zeros(batch, v.shape[1], length, v.shape[3], dtype=v.dtype) for _, v in layers],
            position=zeros(1, dtype=torch.int64),
            tokens=zeros(batch, 1, dtype=torch.int64),
            pads=zeros(batch, dtype=torch.int64),
            seeds=zeros(batch, dtype=torch.int64),
            logits=zeros(batch, vocab, dtype=torch.float32),
            counts=None,
            out=zeros(batch, length, dtype=torch.int64),
            deltas=zeros(len(decoder.blocks), batch, hidden, dtype=dtype),
        )
        self.hooks = delta_hooks(self.buffers.deltas)
        self.graphs: dict[Sampling, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if decoder.graphs else None

    @contextmanager
    def stepping(self) -> Iterator[bool]:
        """Decode steps may run: the delta hooks are on every block and sdpa is grouped; yields the mask kind."""
        with pre_hooks_installed(self.decoder.blocks, self.hooks), _decode_attention(self.decoder.model) as additive:
            yield additive

    def step(self, sampling: Sampling, additive_mask: bool) -> None:
        decoder = self.decoder
        decoder.forward(decoder.model, decoder.cache_arg, self.buffers, additive_mask, decoder.window)
        decoder.sample(self.buffers, sampling, decoder.top_p_method, decoder.dense_noise)

    def prepare(self, sampling: Sampling) -> None:
        """Allocate what `sampling` needs and, with graphs, capture its step (before `load`: warm-up writes)."""
        if sampling.freq_penalty and sampling.temperature and self.buffers.counts is None:
            self.buffers.counts = torch.zeros_like(self.buffers.logits)
        if not self.decoder.graphs or sampling in self.graphs:
            return
        self.buffers.position.zero_()
        current = torch.cuda.current_stream(self.decoder.device)
        side = torch.cuda.Stream(self.decoder.device)  # type: ignore[no-untyped-call]
        side.wait_stream(current)
        with self.stepping() as additive:
            with torch.cuda.stream(side):
                for _ in range(2):  # the first call compiles; the second runs what will be captured
                    self.step(sampling, additive)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.step(sampling, additive)
        self.graphs[sampling] = graph

    def load(
        self,
        logits: torch.Tensor,
        cache: Any,
        source: torch.Tensor,
        ids: torch.Tensor,
        pads: torch.Tensor,
        seeds: torch.Tensor,
        deltas: dict[int, torch.Tensor],
    ) -> None:
        """The state after prefill: keys and values, the last logits, each row's padding, seed and counts.
        Row r's prefill is row `source[r]` of `logits` and `cache`."""
        rows, width = ids.shape
        buffers = self.buffers
        for layer, (key, value) in enumerate(_cache_tensors(cache)):
            buffers.keys[layer][:rows, :, :width].copy_(key[source])
            buffers.values[layer][:rows, :, :width].copy_(value[source])
        logits = logits[source]
        buffers.logits.zero_()
        buffers.logits[:rows].copy_(logits)
        for target, source in ((buffers.pads, pads), (buffers.seeds, seeds)):
            target.zero_()
            target[:rows].copy_(source)
        buffers.position.fill_(width - 1)
        buffers.out.zero_()
        buffers.deltas.zero_()
        for layer, delta in deltas.items():
            buffers.deltas[layer, :rows].copy_(delta)
        if buffers.counts is not None:
            buffers.counts.zero_()
            buffers.counts[:rows].copy_(token_counts(ids, pads, logits))

    def run(self, sampling: Sampling, rows: int, start: int, steps: int, stops: torch.Tensor) -> torch.Tensor:
        """Sample `steps` tokens per row after the prompt (slots `start` on); [rows, steps] on the device.
        Stops early once every row holds one of `stops`."""
        graph = self.graphs.get(sampling)
        with nullcontext(True) if graph is not None else self.stepping() as additive:
            self.decoder.sample(self.buffers, sampling, self.decoder.top_p_method, self.decoder.dense_noise)
            for step in range(1, steps):
                if graph is not None:
                    graph.replay()
                else:
                    self.step(sampling, additive)
                if len(stops) and step % EOS_CHECK_STEPS == 0 and self._all_ended(rows, start, step + 1, stops):
                    break
        return self.buffers.out[:rows, start : start + steps]

    def _all_ended(self, rows: int, start: int, done: int, stops: torch.Tensor) -> bool:
        return bool(torch.isin(self.buffers.out[:rows, start : start + done], stops).any(dim=1).all())


# ------------------------------------------------------------------ the decoder of one model
class Decoder:
    """Static decoding for one model: prefill, buckets of static buffers, compiled steps, captured graphs.

    `backend` None runs the steps' kernels as they are; otherwise the steps are `torch.compile`d with it
    (fullgraph; `dynamic` as `torch.compile` takes it: None makes a dimension dynamic once a second size
    of it is seen, so a few compilations serve every bucket). On CUDA, `graphs` captures each bucket's
    step as a CUDA graph. Compiled code is reused by every later call in the process; at most
    `max_buckets` buckets keep their buffers and graphs.
    """

    def __init__(
        self,
        model: Any,
        blocks: nn.ModuleList,
        *,
        backend: str | None,
        graphs: bool = True,
        dynamic: bool | None = None,
        top_p_method: TopPMethod | None = None,
        max_buckets: int = 2,
    ):
        self.model, self.blocks = model, blocks
        embeddings = model.get_input_embeddings().weight
        self.device, self.dtype = embeddings.device, embeddings.dtype
        self.backend = backend
        self.graphs = graphs and self.device.type == "cuda"
        self.top_p_method: TopPMethod = top_p_method or _default_top_p_method(self.device, backend)
        self.dense_noise = self.graphs or self.device.type != "cpu"
        parameters = _forward_parameters(model)
        self.cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self.keeps_logits = "logits_to_keep" in parameters
        self.window = _sliding_window(model.config)
        self.forward: Callable[..., None] = _forward_step
        self.sample: Callable[..., None] = _sample_step
        if backend is not None:
            compile_ = functools.partial(torch.compile, backend=backend, fullgraph=True, dynamic=dynamic)
            self.forward, self.sample = compile_(_forward_step), compile_(_sample_step)
        self._buckets: OrderedDict[tuple[int, int], _Bucket] = OrderedDict()
        self._max_buckets = max_buckets

    @property
    def description(self) -> str:
        steps = "steps not compiled" if self.backend is None else f"steps compiled with {self.backend}"
        return f"static KV cache, {steps}{', captured as CUDA graphs' if self.graphs else ''}"

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The model's forward over the left-padded prompts, as `generate` runs it: [rows, vocab] float32
        logits at each row's last token, and the `DynamicCache` it filled. Sliding-window layers keep every
        key too (a cache built from the config would keep only the last window's): the static buffers hold
        all positions, and the decode step's masks apply the window."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config) if self.window is None else DynamicCache()
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        extra = {"logits_to_keep": 1} if self.keeps_logits else {}
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_arg: cache},
            **extra,
        )
        return output.logits[:, -1].to(torch.float32), cache

    def decode(
        self,
        logits: torch.Tensor,
        cache: Any,
        source: torch.Tensor,
        ids: torch.Tensor,
        pads: Sequence[int],
        seeds: Sequence[int],
        sampling: Sampling,
        max_new_tokens: int,
        stops: Sequence[int],
        deltas: dict[int, torch.Tensor],
    ) -> list[list[int]]:
        """Tokens after each prompt, cut at the first of `stops`. `logits` and `cache` are the prefill's, whose row
        `source[r]` is batch row r's (`ids`: the left-padded prompts of all rows)."""
        rows, width = ids.shape
        bucket = self._bucket(batch_bucket(rows), length_bucket(width + max_new_tokens), cache, logits.shape[-1])
        pads_t = torch.tensor(list(pads), device=ids.device)
        seeds_t = torch.tensor([s & 0xFFFFFFFF for s in seeds], device=ids.device)
        try:
            with _compile_limit():
                bucket.prepare(sampling)
                bucket.load(logits, cache, source, ids, pads_t, seeds_t, deltas)
                out = bucket.run(sampling, rows, width, max_new_tokens, torch.tensor(list(stops), device=ids.device))
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            if self.backend is None and not self.graphs:
                raise
            self._buckets.pop((bucket.batch, bucket.length), None)
            raise DecodeCompileError(_one_line(error)) from error
        return [cut_at_stop(row, stops) for row in out.tolist()]

    def release(self) -> None:
        """Drop every bucket's buffers and graphs (compiled code stays); the next decode allocates anew."""
        self._buckets.clear()

    def _bucket(self, batch: int, length: int, cache: Any, vocab: int) -> _Bucket:
        key = (batch, length)
        if key not in self._buckets:
            while len(self._buckets) >= self._max_buckets:
                self._buckets.popitem(last=False)
            hidden = self.model.get_input_embeddings().weight.shape[-1]
            self._buckets[key] = _Bucket(self, batch, length, cache, hidden, vocab)
        self._buckets.move_to_end(key)
        return self._buckets[key]


def cut_at_stop(tokens: list[int], stops: Sequence[int]) -> list[int]:
    """`tokens` up to (not including) the first that ends a row."""
    ends = [tokens.index(stop) for stop in stops if stop in tokens]
    return tokens[: min(ends)] if ends else tokens


def _one_line(error: BaseException) -> str:
    """`Type: message` on one line; wrapped compiler errors keep the wrapped one's first line too."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' '.join(lines[:2])[:240]}"


def _forward_parameters(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


@contextmanager
def _compile_limit() -> Iterator[None]:
    """Every (bucket, sampling) pair is one more compiled entry of the same two functions: allow many."""
    import torch._dynamo

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    with torch._dynamo.config.patch(name, 256):
        yield
