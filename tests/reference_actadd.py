"""An independent ActAdd used only to check the engine (it imports nothing from actadd_notes).

* Vectors: tokenise p+ and p− by hand (BOS if the model uses one), right-pad the shorter with
  the space token, run one forward pass with `output_hidden_states=True` — hidden_states[l] is
  the input of block l for l < n_layers — and take the difference, dropping the BOS row.
* Steered forwards: a single unpadded sequence, no KV cache, the whole sequence every call, so
  positions inside the call are absolute. The addition is made on the *output* of block l−1 (a
  forward hook), or on the input of block 0 for l = 0 — not the way the engine does it.

Hidden-state capture in transformers ≥ 5 installs persistent (inactive) forward hooks on the
model the first time it is asked for, so vectors are computed on a deep copy: the caller's model
keeps zero hooks and tests can assert that the engine leaves none behind.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def hand_ids(tokenizer, prompt: str, prepend_bos: bool) -> list[int]:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return ([tokenizer.bos_token_id] if prepend_bos else []) + list(ids)


def space_id(tokenizer, pad: str = " ") -> int:
    ids = tokenizer.encode(pad, add_special_tokens=False)
    assert len(ids) == 1, f"{pad!r} is {len(ids)} tokens"
    return ids[0]


def padded_pair(
    tokenizer, prompt_add: str, prompt_sub: str, prepend_bos: bool, pad: str = " "
) -> tuple[list[int], list[int]]:
    a, s = hand_ids(tokenizer, prompt_add, prepend_bos), hand_ids(tokenizer, prompt_sub, prepend_bos)
    width = max(len(a), len(s))
    p = space_id(tokenizer, pad)
    return a + [p] * (width - len(a)), s + [p] * (width - len(s))


@torch.no_grad()
def all_vectors(model, tokenizer, prompt_add: str, prompt_sub: str, prepend_bos: bool, pad: str = " ") -> torch.Tensor:
    """[n_layers, T, d]: h_l(p+) − h_l(p−) at the input of every block, BOS row dropped."""
    a, s = padded_pair(tokenizer, prompt_add, prompt_sub, prepend_bos, pad)
    probe = copy.deepcopy(model)
    out = probe(input_ids=torch.tensor([a, s]), output_hidden_states=True, use_cache=False)
    n_layers = len(out.hidden_states) - 1
    diff = torch.stack([out.hidden_states[l][0] - out.hidden_states[l][1] for l in range(n_layers)])
    return diff[:, 1:] if prepend_bos else diff


def actadd_vector(
    model, tokenizer, prompt_add: str, prompt_sub: str, layer: int, prepend_bos: bool, pad: str = " "
) -> torch.Tensor:
    return all_vectors(model, tokenizer, prompt_add, prompt_sub, prepend_bos, pad)[layer]


@dataclass(frozen=True)
class Add:
    """Add `delta` ([T, d], already scaled) at absolute positions start…start+T−1 of block `layer`'s
    input; with `everywhere`, `delta` is [d] and goes to every position of every call."""

    layer: int
    delta: torch.Tensor
    start: int = 0
    everywhere: bool = False


def _blocks(model) -> torch.nn.ModuleList:
    for path in ("transformer.h", "gpt_neox.layers", "model.decoder.layers", "model.layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise AssertionError(f"reference: no blocks in {type(model).__name__}")


def _apply(hidden: torch.Tensor, adds: Sequence[Add]) -> torch.Tensor:
    hidden = hidden.clone()
    for add in adds:
        if add.everywhere:
            hidden[0] = hidden[0] + add.delta
        else:
            t = add.delta.shape[0]
            assert add.start + t <= hidden.shape[1], "reference: prompt shorter than the vector"
            hidden[0, add.start : add.start + t] = hidden[0, add.start : add.start + t] + add.delta
    return hidden


@torch.no_grad()
def steered_logits(model, ids: Sequence[int], adds: Sequence[Add] = (), blocks=None) -> torch.Tensor:
    """[len(ids), vocab] logits of one sequence, no cache, with the additions made."""
    blocks = blocks if blocks is not None else _blocks(model)
    by_layer: dict[int, list[Add]] = {}
    for add in adds:
        by_layer.setdefault(add.layer, []).append(add)
    handles = []
    try:
        for layer, group in by_layer.items():
            if layer == 0:

                def pre(module, args, group=group):
                    return (_apply(args[0], group), *args[1:])

                handles.append(blocks[0].register_forward_pre_hook(pre))
            else:

                def post(module, args, output, group=group):
                    if isinstance(output, tuple):
                        return (_apply(output[0], group), *output[1:])
                    return _apply(output, group)

                handles.append(blocks[layer - 1].register_forward_hook(post))
        logits = model(input_ids=torch.tensor([list(ids)]), use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits[0].float()


@torch.no_grad()
def greedy(
    model, ids: Sequence[int], adds: Sequence[Add], max_new_tokens: int, eos_id: int | None, blocks=None
) -> list[int]:
    """Greedy decoding that re-runs the whole sequence at every step (no KV cache)."""
    ids, new = list(ids), []
    for _ in range(max_new_tokens):
        token = int(steered_logits(model, ids, adds, blocks)[-1].argmax())
        if token == eos_id:
            break
        ids.append(token)
        new.append(token)
    return new
