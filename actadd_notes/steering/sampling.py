"""Sampling as the ActAdd paper did it, with per-row random streams.

The paper sampled with temperature, top-p and TransformerLens' `freq_penalty` (subtract
`penalty × count` of each token already in the sequence); transformers has no frequency
penalty, so `FrequencyPenalty` provides it. Order follows TransformerLens: temperature,
frequency penalty, top-k, top-p.

`SeededGumbelSampler` makes sampling a function of (row seed, position, token) alone:
it adds Gumbel noise from a counter-based hash to the filtered log-probabilities and lets
greedy decoding take the argmax, which draws exactly from the filtered distribution.
A row therefore samples the same way whatever else shares its batch — in float32 batched
sweeps reproduce single runs token for token (in bf16 on a GPU, matrix results depend on the
batch shape, so near-ties can fall the other way) — and a steered row and its baseline use
the same random numbers (common random numbers: the comparison's noise shrinks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

from actadd_notes.errors import SteeringError

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x · constant) mod 2³² without int64 overflow: the constant is split into 16-bit halves."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _row_base(seeds: torch.Tensor, positions: int | torch.Tensor) -> torch.Tensor:
    return _mix32(_mix32(_mul32(seeds.to(torch.int64) & _MASK32, 0x9E3779B1) + positions) ^ 0x5BD1E995)


def _unit(base: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """U(0,1) for each (row base, token) pair, elementwise with broadcasting."""
    bits = _mix32(base ^ _mix32(tokens + 0x68E31DA4))
    return (bits.to(torch.float64) + 0.5) / 2**32


def uniform_noise(seeds: torch.Tensor, position: int | torch.Tensor, vocab: int) -> torch.Tensor:
    """U(0,1) of shape [rows, vocab] determined by each row's seed and the absolute position
    (one int for all rows, or a [rows] tensor)."""
    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    return _unit(_row_base(seeds, position)[:, None], tokens[None, :])


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    freq_penalty: float = 0.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and self.temperature != float("inf")):
            raise SteeringError(f"temperature: {self.temperature} must be a finite number ≥ 0")
        if not 0 < self.top_p <= 1:
            raise SteeringError(f"top_p: {self.top_p} must be in (0, 1]")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SteeringError(f"top_k: {self.top_k!r} must be a whole number ≥ 0 (0 = off)")
        if not (self.freq_penalty == self.freq_penalty and abs(self.freq_penalty) != float("inf")):
            raise SteeringError(f"freq_penalty: {self.freq_penalty} must be a finite number")


class FrequencyPenalty(LogitsProcessor):
    """Subtract `penalty × (occurrences so far)` from each token's logit, padding excluded."""

    def __init__(self, penalty: float, pad_lengths: Sequence[int]):
        self.penalty = penalty
        self.pad_lengths = torch.tensor(list(pad_lengths), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = (positions[None, :] >= self.pad_lengths.to(input_ids.device)[:, None]).to(scores.dtype)
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, real)
        return scores - self.penalty * counts


class Temperature(LogitsProcessor):
    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class SeededGumbelSampler(LogitsProcessor):
    """Last processor: log-softmax plus per-row seeded Gumbel noise; greedy argmax then samples."""

    def __init__(self, seeds: Sequence[int], pad_lengths: Sequence[int] | None = None):
        self.seeds = torch.tensor([s & _MASK32 for s in seeds], dtype=torch.int64)
        pads = [0] * len(seeds) if pad_lengths is None else list(pad_lengths)
        self.pad_lengths = torch.tensor(pads, dtype=torch.int64)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        # the row's own position, left padding not counted: the same whatever else shares the batch
        positions = input_ids.shape[1] - self.pad_lengths.to(scores.device)
        base = _row_base(self.seeds.to(scores.device), positions)
        if scores.device.type != "cpu":  # dense: cheap on an accelerator, and its cost does not depend on the text
            tokens = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.int64)
            return log_probs + _gumbel(_unit(base[:, None], tokens[None, :]))
        # on the CPU, noise only where a token can still be drawn: after top-p a handful per row
        rows, tokens = torch.nonzero(torch.isfinite(log_probs), as_tuple=True)
        sampled = torch.full_like(log_probs, -math.inf)
        sampled[rows, tokens] = log_probs[rows, tokens] + _gumbel(_unit(base[rows], tokens))
        return sampled


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    return (-torch.log(-torch.log(uniform))).to(torch.float32)


def logits_processors(sampling: Sampling, seeds: Sequence[int], pad_lengths: Sequence[int]) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if sampling.temperature == 0:  # greedy as in TransformerLens: the plain argmax, no penalty
        return processors
    if sampling.temperature != 1.0:
        processors.append(Temperature(sampling.temperature))
    if sampling.freq_penalty:
        processors.append(FrequencyPenalty(sampling.freq_penalty, pad_lengths))
    if sampling.top_k:
        processors.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(sampling.top_p))
    processors.append(SeededGumbelSampler(seeds, pad_lengths))
    return processors
