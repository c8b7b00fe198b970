"""Forward hooks: where the decoder blocks are, recording their inputs, and adding vectors.

Positions are absolute (index into the padded sequence, counted across KV-cached decode
steps), never counted inside one forward call: a hook on the top-level model records
how many tokens the cache already holds before each call, so a decode step that sees one
token knows it sits at position L+k and leaves the prompt's front positions alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actadd_notes.errors import ModelError, SteeringError
from actadd_notes.steering.vectors import SteeringVector

# Where Hugging Face keeps the decoder blocks, per family:
#   Llama, Mistral, Qwen2/3, Gemma/Gemma2, Phi-3: model.layers · OPT: model.decoder.layers
#   GPT-2, GPT-J: transformer.h · GPT-NeoX/Pythia: gpt_neox.layers · multimodal wrappers: model.language_model.layers
BLOCK_PATHS = (
    "model.layers",
    "model.decoder.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.language_model.layers",
    "transformer.layers",
)

POSITIONS = ("front", "all")

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
PreHook = Callable[[nn.Module, Args, Kwargs], "tuple[Args, Kwargs] | None"]

# set while extracting activations: a vector computed inside a steering block must not be steered
_SUSPENDED: ContextVar[bool] = ContextVar("actadd_steering_suspended", default=False)


@contextmanager
def steering_suspended() -> Iterator[None]:
    """Forward passes inside run unsteered, whatever steering hooks are installed."""
    token = _SUSPENDED.set(True)
    try:
        yield
    finally:
        _SUSPENDED.reset(token)


def find_blocks(model: nn.Module, block_path: str | None = None) -> tuple[str, nn.ModuleList]:
    """The model's decoder blocks, found by family or at the dotted `block_path` override."""
    candidates = (block_path,) if block_path else BLOCK_PATHS
    for path in candidates:
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return path, module
    kind = type(model).__name__
    if block_path:
        raise ModelError(f"{kind} has no list of decoder blocks at {block_path!r}")
    raise ModelError(
        f"cannot find the decoder blocks of {kind} (tried {', '.join(BLOCK_PATHS)}); "
        "pass block_path='dotted.path.to.ModuleList' for this architecture"
    )


def _hidden_of(args: Args, kwargs: Kwargs) -> torch.Tensor:
    hidden: torch.Tensor = args[0] if args else kwargs["hidden_states"]
    return hidden


def _with_hidden(args: Args, kwargs: Kwargs, hidden: torch.Tensor) -> tuple[Args, Kwargs]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


@contextmanager
def recording_block_inputs(blocks: nn.ModuleList, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the residual stream at the input of each listed block (TransformerLens `resid_pre`)."""
    captured: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for layer in layers:
            handles.append(
                blocks[layer].register_forward_pre_hook(_make_record_hook(captured, layer), with_kwargs=True)
            )
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _make_record_hook(captured: dict[int, torch.Tensor], layer: int) -> PreHook:
    def hook(module: nn.Module, args: Args, kwargs: Kwargs) -> None:
        captured[layer] = _hidden_of(args, kwargs).detach()

    return hook


@dataclass(frozen=True)
class SteeringPlan:
    """What each row of the next batch gets.

    `rows[r]` lists the vectors for row r (per-row steering); `shared` vectors go to every row.
    `starts[r]` is the absolute position of row r's first content token (after padding and BOS,
    or the start of the user's message in a chat template); None derives it from the batch's
    attention mask and `bos_id` at prefill.
    """

    rows: tuple[tuple[SteeringVector, ...], ...] | None = None
    shared: tuple[SteeringVector, ...] = ()
    starts: tuple[int, ...] | None = None
    bos_id: int | None = None
    position: str = "front"

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise SteeringError(f"position: {self.position!r} — expected one of {', '.join(POSITIONS)}")

    @property
    def layers(self) -> list[int]:
        vectors = list(self.shared) + [v for row in self.rows or () for v in row]
        return sorted({v.layer for v in vectors})

    def vectors_for_row(self, row: int) -> tuple[SteeringVector, ...]:
        own = self.rows[row] if self.rows is not None else ()
        return self.shared + own


@dataclass
class _CallState:
    """Filled by the top-level hook before each forward call; read by the block hooks."""

    past: int = 0
    length: int = 0
    starts: tuple[int, ...] = ()
    deltas: dict[int, torch.Tensor | None] = field(default_factory=dict)


def _cache_length(kwargs: Kwargs) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2])  # legacy tuple caches


def _make_position_hook(state: _CallState, plan: SteeringPlan) -> PreHook:
    def hook(module: nn.Module, args: Args, kwargs: Kwargs) -> None:
        if _SUSPENDED.get():
            return
        tokens = kwargs.get("input_ids", args[0] if args else None)
        shape = tokens.shape if tokens is not None else kwargs["inputs_embeds"].shape
        batch, length = int(shape[0]), int(shape[1])
        state.past, state.length = _cache_length(kwargs), length
        if state.past == 0:
            state.deltas = {}
            state.starts = plan.starts or _starts_from_batch(
                tokens, kwargs.get("attention_mask"), plan.bos_id, batch, length
            )
            if plan.rows is not None and len(plan.rows) != batch:
                raise SteeringError(f"the steering plan has {len(plan.rows)} rows but the batch has {batch}")

    return hook


def _starts_from_batch(
    tokens: torch.Tensor | None, mask: torch.Tensor | None, bos_id: int | None, batch: int, length: int
) -> tuple[int, ...]:
    if mask is None:
        first = torch.zeros(batch, dtype=torch.long)
    else:
        first = mask[:, :length].to(torch.long).argmax(dim=1).cpu()
    starts = []
    for row, start in enumerate(first.tolist()):
        has_bos = tokens is not None and bos_id is not None and int(tokens[row, start]) == bos_id
        starts.append(start + int(has_bos))
    return tuple(starts)


_Groups = dict[int, tuple[SteeringVector, list[int]]]


def _groups_at(plan: SteeringPlan, layer: int, batch: int) -> _Groups:
    """The vectors at `layer`, each with the rows it steers (keyed by vector object)."""
    groups: _Groups = {}
    for row in range(batch):
        for vector in plan.vectors_for_row(row):
            if vector.layer == layer:
                groups.setdefault(id(vector), (vector, []))[1].append(row)
    return groups


def _everywhere_delta(groups: _Groups, batch: int, like: torch.Tensor) -> torch.Tensor:
    delta = like.new_zeros(batch, like.shape[-1])
    for vector, rows in groups.values():
        mean = vector.scaled().mean(dim=0).to(like)
        delta.index_add_(0, torch.tensor(rows, device=like.device), mean.expand(len(rows), -1))
    return delta


def everywhere_deltas(plan: SteeringPlan, batch: int, like: torch.Tensor) -> dict[int, torch.Tensor]:
    """`position: all`: the [batch, d] addition of each steered layer, exactly as the hooks build it."""
    deltas = {}
    for layer in plan.layers:
        groups = _groups_at(plan, layer, batch)
        if groups:
            deltas[layer] = _everywhere_delta(groups, batch, like)
    return deltas


def _build_delta(
    plan: SteeringPlan, layer: int, state: _CallState, batch: int, like: torch.Tensor
) -> torch.Tensor | None:
    """Front mode: [B, span, d] to add from absolute position 0. All mode: [B, d] for every position.

    Rows sharing a vector object are written with one indexed add, so a 560-row sweep over
    35 settings costs 35 small kernels per layer at prefill, not 560."""
    groups = _groups_at(plan, layer, batch)
    if not groups:
        return None
    device, width = like.device, like.shape[-1]
    if plan.position == "all":
        return _everywhere_delta(groups, batch, like)
    for vector, rows in groups.values():
        short = [row for row in rows if state.starts[row] + vector.positions > state.length]
        if short:
            row = short[0]
            raise SteeringError(
                f"row {row}: the prompt has {state.length - state.starts[row]} token(s) after its start but the "
                f"steering vector ({vector.prompt_add!r} − {vector.prompt_sub!r}) covers {vector.positions}; "
                "use a longer prompt or shorter steering prompts"
            )
    span = max(state.starts[row] + vector.positions for vector, rows in groups.values() for row in rows)
    delta = like.new_zeros(batch, span, width)
    starts = torch.tensor(state.starts, device=device)
    for vector, rows in groups.values():
        index = torch.tensor(rows, device=device)
        positions = starts[index][:, None] + torch.arange(vector.positions, device=device)  # [n, T]
        values = vector.scaled().to(like).expand(len(rows), -1, -1)  # [n, T, d]
        delta.index_put_((index[:, None].expand_as(positions), positions), values, accumulate=True)
    return delta


def _make_add_hook(plan: SteeringPlan, state: _CallState, layer: int) -> PreHook:
    def hook(module: nn.Module, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs] | None:
        if _SUSPENDED.get():
            return None
        hidden = _hidden_of(args, kwargs)
        if layer not in state.deltas:
            state.deltas[layer] = _build_delta(plan, layer, state, hidden.shape[0], hidden)
        delta = state.deltas[layer]
        if delta is None:
            return None
        if plan.position == "all":
            return _with_hidden(args, kwargs, hidden + delta[:, None, :].to(hidden.device))
        end = min(state.past + state.length, delta.shape[1])
        if state.past >= end:  # a decode step past the prompt's front: nothing to add
            return None
        steered = hidden.clone()
        steered[:, : end - state.past] += delta[:, state.past : end].to(hidden.device)
        return _with_hidden(args, kwargs, steered)

    return hook


def check_layer(layer: int, num_layers: int, model_name: str = "this model") -> None:
    """The one layer-range check of the engine: SteeringError naming the valid range."""
    if not 0 <= layer < num_layers:
        raise SteeringError(f"layer {layer}: {model_name} has layers 0–{num_layers - 1}")


@contextmanager
def steering_hooks(model: nn.Module, blocks: nn.ModuleList, plan: SteeringPlan) -> Iterator[None]:
    """Install `plan` on `model`; every hook comes off on exit, also on exceptions."""
    for layer in plan.layers:
        check_layer(layer, len(blocks))
    state = _CallState()
    handles = []
    try:
        handles.append(model.register_forward_pre_hook(_make_position_hook(state, plan), with_kwargs=True))
        for layer in plan.layers:
            handles.append(
                blocks[layer].register_forward_pre_hook(_make_add_hook(plan, state, layer), with_kwargs=True)
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------ the decode loop's per-row deltas
def delta_hooks(deltas: torch.Tensor) -> list[PreHook]:
    """One pre-hook per block adding `deltas[layer][:, None, :]` to its input ([layers, batch, d], filled by
    the caller). The decode loop's `position: all`: the hooks read the buffer when called, so a step traced
    or captured once serves every setting, and rows of zeros stay bit-identical."""
    return [_make_delta_hook(deltas, layer) for layer in range(deltas.shape[0])]


def _make_delta_hook(deltas: torch.Tensor, layer: int) -> PreHook:
    def hook(module: nn.Module, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
        hidden = _hidden_of(args, kwargs)
        return _with_hidden(args, kwargs, hidden + deltas[layer][:, None, :])

    return hook


@contextmanager
def pre_hooks_installed(blocks: nn.ModuleList, hooks: Sequence[PreHook]) -> Iterator[None]:
    """Install `hooks[i]` on `blocks[i]` (with kwargs); all come off on exit, also on exceptions."""
    handles = []
    try:
        for block, hook in zip(blocks, hooks, strict=True):
            handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
