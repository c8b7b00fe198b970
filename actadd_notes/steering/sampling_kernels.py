"""The sampler's two full-vocabulary passes as Triton kernels, for CUDA.

`sample_tokens(top_p_method="triton")` runs the same radix search for the top-p nucleus as
`"radix"` and the same seeded Gumbel draw, but where torch ops must touch every token, these
kernels skip what cannot matter: a histogram pass adds a token's mass only when it is non-zero and
inside the digits fixed so far (a masked atomic add: the second pass adds a few hundred tokens a
row instead of all of them), and the draw hashes its noise in 32-bit integers (torch has no
wrapping uint32 multiply, so `sampling._unit` spends int64 ops on it). The noise is the torch
code's to the bit. The histograms are sums of whole numbers in float64, exact in any order, of the
same masses up to exp's last bit (`sampling._masses`). The draw takes the argmax of score + noise
over the nucleus, which is the argmax of log-probability + noise without the log-softmax (a row's
constant); float32 rounding of the two sums can differ only where two perturbed scores lie within
an ulp.

Nothing here runs on the CPU in production; tests run the kernels in Triton's interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_HISTOGRAM_BLOCK = 1024
_DRAW_BLOCK = 2048


@triton.jit
def _order_key(score):
    """float32 → uint32 with the same order (`sampling._order_keys`)."""
    bits = score.to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) == 0, bits | 0x80000000, ~bits)


@triton.jit
def _mix32(x):
    """lowbias32 on uint32 (`sampling._mix32`): the multiplies wrap modulo 2³² by themselves."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _mass_histogram_kernel(
    scores_ptr,
    row_max_ptr,
    prefix_ptr,
    histogram_ptr,
    vocab,
    SCALE: tl.constexpr,
    SHIFT: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < vocab
    score = tl.load(scores_ptr + row * vocab + offsets, mask=inside, other=float("-inf"))
    row_max = tl.load(row_max_ptr + row).to(tl.float64)
    mass = tl.floor(tl.exp(score.to(tl.float64) - row_max) * SCALE)
    key = _order_key(score)
    wanted = inside & (mass > 0)
    if SHIFT + BITS < 32:
        wanted = wanted & ((key >> (SHIFT + BITS)).to(tl.int64) == tl.load(prefix_ptr + row))
    digit = ((key >> SHIFT) & ((1 << BITS) - 1)).to(tl.int64)
    tl.atomic_add(histogram_ptr + row * (1 << BITS) + digit, mass, mask=wanted)


def mass_histogram(
    scores: torch.Tensor, row_max: torch.Tensor, prefix: torch.Tensor, shift: int, bits: int, scale: float
) -> torch.Tensor:
    """[rows, 2^bits] float64: the mass (`sampling._masses`) of each row's tokens whose order key has the
    digits `prefix` above bit `shift + bits`, by their next `bits` bits."""
    rows, vocab = scores.shape
    histogram = torch.zeros(rows, 1 << bits, dtype=torch.float64, device=scores.device)
    grid = (rows, triton.cdiv(vocab, _HISTOGRAM_BLOCK))
    _mass_histogram_kernel[grid](
        scores, row_max, prefix, histogram, vocab, SCALE=scale, SHIFT=shift, BITS=bits, BLOCK=_HISTOGRAM_BLOCK
    )
    return histogram


@triton.jit
def _gumbel_draw_kernel(
    scores_ptr,
    threshold_ptr,
    base_ptr,
    best_value_ptr,
    best_index_ptr,
    vocab,
    chunks,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    offsets = chunk * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < vocab
    score = tl.load(scores_ptr + row * vocab + offsets, mask=inside, other=float("-inf"))
    kept = inside & (_order_key(score).to(tl.int64) >= tl.load(threshold_ptr + row))
    base = tl.load(base_ptr + row).to(tl.uint32)
    bits = _mix32(base ^ _mix32(offsets.to(tl.uint32) + 0x68E31DA4))
    uniform = (bits.to(tl.float64) + 0.5) / 4294967296.0
    gumbel = (-tl.log(-tl.log(uniform))).to(tl.float32)
    value = tl.where(kept, score + gumbel, float("-inf"))
    best = tl.argmax(value, axis=0)
    tl.store(best_value_ptr + row * chunks + chunk, tl.max(value, axis=0))
    tl.store(best_index_ptr + row * chunks + chunk, chunk * BLOCK + best)


def gumbel_draw(scores: torch.Tensor, threshold: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """[rows] int64: each row's argmax of score + seeded Gumbel noise over the tokens whose order key is at
    least `threshold` (the nucleus; 0 keeps every token). `base` is `sampling._row_base` of the rows."""
    rows, vocab = scores.shape
    chunks = triton.cdiv(vocab, _DRAW_BLOCK)
    best_value = torch.empty(rows, chunks, dtype=torch.float32, device=scores.device)
    best_index = torch.empty(rows, chunks, dtype=torch.int32, device=scores.device)
    _gumbel_draw_kernel[(rows, chunks)](
        scores, threshold, base, best_value, best_index, vocab, chunks, BLOCK=_DRAW_BLOCK
    )
    # ties go to the lowest index, as torch's argmax does: the first chunk, and within it the first token
    return best_index.gather(1, best_value.argmax(dim=1, keepdim=True)).squeeze(1).to(torch.int64)
