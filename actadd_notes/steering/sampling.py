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

`sample_tokens` is the same pipeline as one function, for the engine's own decode loop: it
keeps the token counts as a buffer (updated by the caller) instead of recounting the sequence,
and with `dense_noise` it never waits for the host, so a CUDA graph can capture it. Its
`top_p_method="sort"` is transformers' `TopPLogitsWarper` op for op; `"radix"` finds the same
nucleus without sorting the vocabulary (see `_nucleus_threshold`); `"triton"` runs that search and
the draw as the Triton kernels of `sampling_kernels` (CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

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
        return cast(torch.FloatTensor, scores - self.penalty * token_counts(input_ids, self.pad_lengths, scores))


def token_counts(input_ids: torch.Tensor, pad_lengths: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[rows, vocab] occurrences of each token in each left-padded row, padding excluded, dtype of `like`."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    real = (positions[None, :] >= pad_lengths.to(input_ids.device)[:, None]).to(like.dtype)
    return torch.zeros_like(like).scatter_add_(1, input_ids, real)


class Temperature(LogitsProcessor):
    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return cast(torch.FloatTensor, scores / self.temperature)


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
        # dense on an accelerator (cheap there, and its cost does not depend on the text); on the CPU,
        # noise only where a token can still be drawn: after top-p a handful per row
        seeds = self.seeds.to(scores.device)
        return cast(torch.FloatTensor, _perturbed(log_probs, seeds, positions, dense=scores.device.type != "cpu"))


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    return (-torch.log(-torch.log(uniform))).to(torch.float32)


def _perturbed(log_probs: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor, *, dense: bool) -> torch.Tensor:
    """Log-probabilities plus each row's seeded Gumbel noise; -inf stays -inf. `dense` computes the noise for
    every token (no host synchronisation); otherwise only where a token can be drawn."""
    if dense:
        return log_probs + _gumbel(uniform_noise(seeds, positions, log_probs.shape[-1]))
    base = _row_base(seeds, positions)
    rows, tokens = torch.nonzero(torch.isfinite(log_probs), as_tuple=True)
    sampled = torch.full_like(log_probs, -math.inf)
    sampled[rows, tokens] = log_probs[rows, tokens] + _gumbel(_unit(base[rows], tokens))
    return sampled


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


# ------------------------------------------------------------------ one function, for the engine's decode loop
TopPMethod = Literal["sort", "radix", "triton"]
TOP_P_METHODS: tuple[TopPMethod, ...] = ("sort", "radix", "triton")

# The digits of the 32-bit order key that the nucleus search fixes, pass by pass. In torch ops every pass is one
# atomic add per token, and wide digits spread those adds over many buckets; the kernels add only the tokens
# still in scope, so after the first pass hardly any, and small buckets that stay in cache win. On the H200 at
# 560 rows and flat logits: radix 3.5 ms a step with 16-16 against 4.3 with 11-11-10 (7.8 with 8-8-8-8);
# triton 2.4 ms with 11-11-10 against 2.9 with 16-16.
_RADIX_BITS: dict[str, tuple[int, ...]] = {"radix": (16, 16), "triton": (11, 11, 10)}


def sample_tokens(
    logits: torch.Tensor,
    sampling: Sampling,
    *,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    counts: torch.Tensor | None = None,
    top_p_method: TopPMethod = "sort",
    dense_noise: bool = True,
) -> torch.Tensor:
    """The next token of every row, as `logits_processors` followed by greedy argmax would pick it.

    `logits` [rows, vocab] float32; `seeds` [rows] int64; `positions` [rows] int64, each row's length so far
    without its left padding (the noise key, as `SeededGumbelSampler` computes it); `counts` [rows, vocab]
    float32, the occurrences of each token so far (needed when `freq_penalty` is set). With `dense_noise` the
    call never synchronises with the host, so a CUDA graph can capture it.
    """
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.freq_penalty:
        if counts is None:
            raise SteeringError("sample_tokens: freq_penalty needs the token counts")
        scores = scores - sampling.freq_penalty * counts
    if sampling.top_k:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1]))[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p_method == "triton":
        return _sample_triton(scores, sampling.top_p, seeds, positions)
    if sampling.top_p < 1.0:
        if top_p_method == "radix":
            keep = _nucleus_radix(scores, sampling.top_p)
        elif top_p_method == "sort":
            keep = _nucleus_sort(scores, sampling.top_p)
        else:
            raise SteeringError(f"top_p_method: {top_p_method!r} — expected one of {', '.join(TOP_P_METHODS)}")
        scores = scores.masked_fill(~keep, -math.inf)
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    return _perturbed(log_probs, seeds.to(torch.int64) & _MASK32, positions, dense=dense_noise).argmax(dim=-1)


def _nucleus_sort(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Tokens top-p keeps, computed as `TopPLogitsWarper` does (sort, cumulative softmax, scatter back)."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative_probs <= (1 - top_p)
    sorted_remove[..., -1:] = False
    return ~sorted_remove.scatter(1, sorted_indices, sorted_remove)


def _order_keys(scores: torch.Tensor) -> torch.Tensor:
    """float32 → int64 in [0, 2³²) with the same order: positive floats keep their bits above 2³¹,
    negative ones are flipped below it."""
    bits = scores.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits + 2**31, 2**31 - 1 - (bits & 0x7FFFFFFF))


def _mass_scale(vocab: int) -> float:
    """Masses are whole numbers up to this (the row's most likely token): a row sums to at most 2⁵²."""
    return 2.0 ** (52 - math.ceil(math.log2(vocab)))


def _masses(scores: torch.Tensor, row_max: torch.Tensor, scale: float) -> torch.Tensor:
    """Each token's probability mass as a whole number in float64. exp in float64 too: two implementations
    whose exp differs in the last bit (torch's, CUDA's, numpy's) then give masses that differ by one unit
    (of up to 2³⁵ at a 128k vocabulary) now and then, not by the 2¹¹ units a float32 ulp would move them."""
    return torch.floor(torch.exp(scores.to(torch.float64) - row_max.to(torch.float64)) * scale)


def _torch_histogram(
    scores: torch.Tensor, row_max: torch.Tensor, prefix: torch.Tensor, shift: int, bits: int, scale: float
) -> torch.Tensor:
    """[rows, 2^bits] float64: the mass of the tokens whose order key has the digits `prefix` above bit
    `shift + bits`, by their next `bits` bits (`sampling_kernels.mass_histogram` as torch ops)."""
    keys = _order_keys(scores)
    digit = (keys >> shift) & ((1 << bits) - 1)
    in_scope = (keys >> (shift + bits)) == prefix
    histogram = torch.zeros(keys.shape[0], 1 << bits, dtype=torch.float64, device=keys.device)
    return histogram.scatter_add_(1, digit, torch.where(in_scope, _masses(scores, row_max, scale), 0.0))


Histogram = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int, float], torch.Tensor]


def _choose_bucket(
    histogram: torch.Tensor, above: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first bucket with mass above it below `target` (`above`: the mass above the whole histogram), and
    the mass above that bucket; [rows, 1] each. Two levels (blocks of buckets, then the buckets of the one
    block) instead of a cumulative sum over every bucket."""
    rows, buckets = histogram.shape
    width = 1 << ((buckets.bit_length() - 1) // 2)
    blocks = histogram.view(rows, buckets // width, width)
    block_mass = blocks.sum(dim=-1)
    block_above = above + block_mass.sum(dim=-1, keepdim=True) - block_mass.cumsum(dim=-1)
    block = (block_above >= target).sum(dim=-1, keepdim=True)
    local = blocks.gather(1, block[:, :, None].expand(rows, 1, width)).squeeze(1)
    local_above = block_above.gather(1, block) + local.sum(dim=-1, keepdim=True) - local.cumsum(dim=-1)
    inner = (local_above >= target).sum(dim=-1, keepdim=True)
    return block * width + inner, local_above.gather(1, inner)


def _nucleus_threshold(scores: torch.Tensor, top_p: float, histogram: Histogram, digits: Sequence[int]) -> torch.Tensor:
    """[rows, 1] int64: the smallest order key κ of each row with mass strictly above it below top_p.

    Top-p keeps a token when the probability mass strictly above it is below `top_p` — `TopPLogitsWarper`'s
    rule in exact arithmetic — so the kept set is every token whose order key is at least κ. κ is found a
    digit at a time (`digits`, bit counts from the top): a histogram of the mass per digit within the
    digits fixed so far places κ in one bucket. Masses are whole numbers held in float64 (`_masses`), so
    no sum exceeds 2⁵² and every sum is exact whatever the order of addition: a row's nucleus does not
    depend on what shares its batch or on how a kernel orders its atomic adds (float64, unlike int64,
    compiles to fused atomic adds).
    Tokens with exactly equal scores are kept or dropped together (the sort keeps part of a tie at the
    boundary); otherwise the search and the sort differ only where float32 rounding of the sort's
    cumulative sum decides.
    """
    scale = _mass_scale(scores.shape[-1])
    row_max = scores.amax(dim=-1, keepdim=True)
    prefix = torch.zeros(scores.shape[0], 1, dtype=torch.int64, device=scores.device)  # digits of κ so far
    target = above = None
    shift = 32
    for bits in digits:
        shift -= bits
        by_bucket = histogram(scores, row_max, prefix, shift, bits, scale)
        if target is None or above is None:  # the first histogram holds every token: its sum is the total
            target = torch.ceil(by_bucket.sum(dim=-1, keepdim=True) * top_p)
            above = torch.zeros_like(target)
        chosen, above = _choose_bucket(by_bucket, above, target)
        prefix = (prefix << bits) | chosen
    return prefix


def _nucleus_radix(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Tokens top-p keeps, found without sorting the vocabulary (`_nucleus_threshold`)."""
    return _order_keys(scores) >= _nucleus_threshold(scores, top_p, _torch_histogram, _RADIX_BITS["radix"])


def _sample_triton(scores: torch.Tensor, top_p: float, seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`sample_tokens`' nucleus and draw as the Triton kernels of `sampling_kernels` (CUDA)."""
    import actadd_notes.steering.sampling_kernels as sampling_kernels

    scores = scores.to(torch.float32).contiguous()
    if top_p < 1.0:
        threshold = _nucleus_threshold(scores, top_p, sampling_kernels.mass_histogram, _RADIX_BITS["triton"])
    else:
        threshold = torch.zeros(scores.shape[0], 1, dtype=torch.int64, device=scores.device)
    base = _row_base(seeds.to(torch.int64) & _MASK32, positions)
    return sampling_kernels.gumbel_draw(scores, threshold.contiguous(), base.contiguous())
