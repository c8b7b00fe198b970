"""Numerical health: logits with inf or NaN end a call with an error that names the layer, never empty text.

A residual stream beyond float16's range (Gemma's reaches ~1e5 > 65,504) turns into infinities, then NaN,
and every later token is garbage: completions come out empty and a sweep reports "none passed". Checking
the first forward's logits costs one reduction; only when it fails is the forward run again, with a hook
on every block, to find where the activations first stopped being finite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from actadd_notes.errors import ModelError


def check_finite(
    logits: torch.Tensor, blocks: nn.ModuleList, rerun: Callable[[], object], *, model_name: str, dtype: torch.dtype
) -> None:
    """Raise a ModelError naming the first non-finite layer when `logits` hold inf or NaN; `rerun` runs
    again the forward that produced them (with its steering), so the blocks can be watched."""
    if bool(torch.isfinite(logits).all()):
        return
    layer = first_nonfinite_layer(blocks, rerun)
    where = (
        f"from layer {layer} on (the output of block {layer} of {len(blocks)})"
        if layer is not None
        else f"after the last of its {len(blocks)} blocks (the final norm or the LM head)"
    )
    message = f"{model_name} in {str(dtype).removeprefix('torch.')}: the activations are inf or NaN {where}"
    if dtype == torch.float16:
        raise ModelError(
            f"{message} — they exceed float16's range (±65,504); set `dtype: bfloat16` (float32's range) "
            "or `dtype: float32`"
        )
    raise ModelError(f"{message} — the weights or the steering (a very large coeff?) overflow")


@contextmanager
def first_logits(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside, the first forward's logits at the last position land in the yielded list: the prefill's,
    for a check of a `generate` call, which does not hand them out."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not captured:
            captured.append(output.logits[:, -1].detach())

    handle = model.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def first_nonfinite_layer(blocks: nn.ModuleList, rerun: Callable[[], object]) -> int | None:
    """The first block whose output holds inf or NaN while `rerun` runs, or None if no block's does."""
    finite: dict[int, bool] = {}
    with _watching(blocks, finite):
        rerun()
    return next((layer for layer in sorted(finite) if not finite[layer]), None)


@contextmanager
def _watching(blocks: nn.ModuleList, finite: dict[int, bool]) -> Iterator[None]:
    handles = []
    try:
        for layer, block in enumerate(blocks):
            handles.append(block.register_forward_hook(_make_finite_hook(finite, layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _make_finite_hook(finite: dict[int, bool], layer: int) -> Callable[[nn.Module, Any, Any], None]:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        finite[layer] = finite.get(layer, True) and bool(torch.isfinite(hidden).all())

    return hook
