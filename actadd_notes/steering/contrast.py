"""Mean-difference steering vectors (Contrastive Activation Addition, Rimsky et al.): one [1, d]
vector from many contrast pairs, added at every position like `position: all`.

For each pair (p+, p−) the difference h_l(p+) − h_l(p−) of the residual stream at the input of
block l is taken at one place, and the vector is the mean over pairs:

* `last` (the default, as CAA does): each prompt's last token, where a causal model has read the
  whole prompt — so prompts of different lengths compare at their ends, and padding never enters;
* `mean`: each prompt's mean over its own tokens (BOS excluded), for pairs whose contrast is spread
  over the text rather than summed up at its end.

How well the pairs agree tells whether there is one direction to find: `agreement` is the mean
cosine similarity of each pair's difference to the mean difference (1: all pairs point one way;
near 0: the mean is mostly noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from actadd_notes.errors import SteeringError
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.vectors import DEFAULT_PAD, SteeringVector

PAIR_POSITIONS = ("last", "mean")
PAIR_BATCH = 64  # prompts a forward pass: bounds the activations a pairs note holds at once


@dataclass(frozen=True)
class PairDifferences:
    """Every pair's difference at every layer: [layers, pairs, d], float32."""

    pairs: tuple[tuple[str, str], ...]
    differences: torch.Tensor
    pair_position: str

    def vector(self, layer: int) -> SteeringVector:
        """The mean-difference vector at `layer`, unscaled, shape [1, d], with its provenance."""
        mean = self.differences[layer].mean(dim=0, keepdim=True)
        return SteeringVector(
            vector=mean,
            layer=layer,
            prompt_add=f"mean of {len(self.pairs)} pair(s)",
            prompt_sub="",
            provenance={
                "method": "mean_difference",
                "pairs": str(len(self.pairs)),
                "pair_position": self.pair_position,
                "agreement": f"{self.agreement(layer):.4f}",
            },
        )

    def agreement(self, layer: int) -> float:
        """Mean cosine similarity of each pair's difference to the mean difference at `layer`."""
        per_pair = self.differences[layer]
        mean = per_pair.mean(dim=0, keepdim=True)
        if float(mean.norm()) == 0.0:
            return math.nan
        return float(torch.nn.functional.cosine_similarity(per_pair, mean, dim=-1).mean())


def pair_differences(
    lm: SteerableLM,
    pairs: Sequence[tuple[str, str]],
    *,
    pair_position: str = "last",
    pad_token: str = DEFAULT_PAD,
) -> PairDifferences:
    """h(p+) − h(p−) of every pair at every layer, from forward passes of `PAIR_BATCH` prompts each (a
    note of thousands of pairs never becomes one batch of thousands of rows)."""
    if not pairs:
        raise SteeringError("pairs: empty — a mean-difference vector needs at least one (add, sub) pair")
    if pair_position not in PAIR_POSITIONS:
        raise SteeringError(f"pair_position: {pair_position!r} — expected {' or '.join(PAIR_POSITIONS)}")
    prompts = [text for pair in pairs for text in pair]
    for text in prompts:
        if not isinstance(text, str) or not text.strip():
            raise SteeringError(f"pairs: empty prompt {text!r} — every add and sub needs some text")
    first = 1 if lm.prepend_bos else 0
    rows = []
    for start in range(0, len(prompts), PAIR_BATCH):
        chunk = prompts[start : start + PAIR_BATCH]
        stacked, _ = lm.activations(chunk, pad_token=pad_token)  # right-padded: earlier positions are exact
        for index, text in enumerate(chunk):
            length = len(lm.encode(text).ids)
            states = stacked[:, index].float()  # [layers, T, d]
            if pair_position == "last":
                rows.append(states[:, length - 1])
            else:
                rows.append(states[:, first:length].mean(dim=1))  # a prompt has at least one token past BOS
        del stacked
    per_prompt = torch.stack(rows, dim=1)  # [layers, 2·pairs, d]
    differences = per_prompt[:, 0::2] - per_prompt[:, 1::2]
    return PairDifferences(tuple((add, sub) for add, sub in pairs), differences, pair_position)
