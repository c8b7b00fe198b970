"""Sampling: TransformerLens' frequency penalty, the counter-based noise, the seeded Gumbel
sampler's distribution, greedy at temperature 0, and top-k / top-p supports."""

from __future__ import annotations

import pytest
import reference_actadd as ref
import torch
from scipy import stats
from tiny import tiny_lm, tiny_model, tiny_threads
from transformers import LogitsProcessorList

from actadd_notes.errors import SteeringError
from actadd_notes.steering import sampling_kernels
from actadd_notes.steering.sampling import (
    _RADIX_BITS,
    TOP_P_METHODS,
    FrequencyPenalty,
    Sampling,
    SeededGumbelSampler,
    _mass_scale,
    _nucleus_radix,
    _nucleus_threshold,
    _order_keys,
    _row_base,
    _torch_histogram,
    logits_processors,
    sample_tokens,
    token_counts,
    uniform_noise,
)

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
PROBS = torch.softmax(LOGITS, dim=-1)


def transformer_lens_freq_penalty(logits: torch.Tensor, tokens: list[torch.Tensor], penalty: float) -> torch.Tensor:
    """TransformerLens `utils.sample_logits`: `logits[b] - freq_penalty * bincount(tokens[b])`."""
    out = logits.clone()
    for b in range(logits.shape[0]):
        out[b] = out[b] - penalty * torch.bincount(tokens[b], minlength=logits.shape[-1])
    return out


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    counts, probs = counts.double(), probs.double()
    return float(stats.chisquare(counts.numpy(), (probs / probs.sum() * counts.sum()).numpy()).pvalue)


def draws(processors, n_rows: int, logits: torch.Tensor = LOGITS, width: int = 4, pads=None) -> torch.Tensor:
    """Apply a processor list to the same logits in n_rows rows; greedy argmax picks the token."""
    input_ids = torch.zeros(n_rows, width, dtype=torch.long)
    scores = logits.expand(n_rows, -1).clone()
    return processors(input_ids, scores).argmax(dim=-1)


# ------------------------------------------------------------------ frequency penalty
def test_frequency_penalty_matches_transformer_lens_with_padding_excluded():
    generator = torch.Generator().manual_seed(0)
    vocab, width = 12, 10
    input_ids = torch.randint(0, vocab, (3, width), generator=generator)
    input_ids[1, 4] = input_ids[2, 7] = 0  # the pad id also occurs as a real token: it counts there
    pads = [0, 3, 5]
    for row, pad in enumerate(pads):
        input_ids[row, :pad] = 0
    scores = torch.randn(3, vocab, generator=generator)
    got = FrequencyPenalty(0.7, pads)(input_ids, scores.clone())
    want = transformer_lens_freq_penalty(scores, [input_ids[r, p:] for r, p in enumerate(pads)], 0.7)
    assert torch.equal(got, want)


def test_penalty_follows_temperature_as_in_transformer_lens():
    input_ids = torch.tensor([[0, 0, 5, 5, 5, 2], [4, 4, 1, 5, 3, 3]])
    pads = [2, 0]
    scores = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    processors = logits_processors(Sampling(temperature=0.5, freq_penalty=1.5), seeds=[0, 1], pad_lengths=pads)
    assert isinstance(processors[-1], SeededGumbelSampler)
    penalised = LogitsProcessorList(processors[:-1])(input_ids, scores.clone())  # all before the sampler
    want = transformer_lens_freq_penalty(scores / 0.5, [input_ids[0, 2:], input_ids[1]], 1.5)
    assert torch.equal(penalised, want)


# ------------------------------------------------------------------ counter-based noise
def test_uniform_noise_is_uniform():
    values = uniform_noise(torch.arange(200), 7, 500).flatten().numpy()
    assert values.min() > 0 and values.max() < 1
    assert stats.kstest(values, "uniform").pvalue > 0.01
    # along positions for one seed and token as well
    along = torch.cat([uniform_noise(torch.tensor([3]), position, 4)[0] for position in range(2_000)]).numpy()
    assert stats.kstest(along, "uniform").pvalue > 0.01


def test_uniform_noise_depends_only_on_seed_position_and_token():
    batch = uniform_noise(torch.tensor([3, 9, 3]), 5, 50)
    assert torch.equal(batch[0], batch[2])
    assert torch.equal(batch[1], uniform_noise(torch.tensor([9]), 5, 50)[0])
    assert torch.equal(uniform_noise(torch.tensor([3]), 5, 80)[:, :50], batch[:1])  # not on the vocab size
    assert torch.equal(uniform_noise(torch.tensor([2**32 + 3]), 5, 50), batch[:1])  # seeds are 32-bit
    per_row = uniform_noise(torch.tensor([3, 9]), torch.tensor([5, 8]), 50)
    assert torch.equal(per_row[0], batch[0])
    assert torch.equal(per_row[1], uniform_noise(torch.tensor([9]), 8, 50)[0])
    assert not torch.isin(batch[0], uniform_noise(torch.tensor([3]), 6, 50)[0]).any()
    assert not torch.isin(batch[0], batch[1]).any()
    assert batch[0].unique().numel() == 50


def test_gumbel_sampler_noise_ignores_left_padding():
    """A row samples the same whatever its padding: noise is keyed by its own position."""
    scores = torch.randn(2, 30, generator=torch.Generator().manual_seed(2))
    padded = SeededGumbelSampler([4, 4], pad_lengths=[0, 3])
    out = padded(torch.zeros(2, 9, dtype=torch.long), scores.clone())
    alone = SeededGumbelSampler([4])(torch.zeros(1, 6, dtype=torch.long), scores[1:].clone())
    assert torch.equal(out[1], alone[0])


# ------------------------------------------------------------------ seeded Gumbel sampler
def test_seeded_gumbel_frequencies_match_softmax():
    n = 6_000
    picks = draws(SeededGumbelSampler(range(n)), n)
    assert chi_square_p(torch.bincount(picks, minlength=len(LOGITS)), PROBS) > 0.01
    # one seed, many positions: the same distribution
    sampler = SeededGumbelSampler([12345] * n, pad_lengths=range(n))
    picks = draws(sampler, n, width=n + 1)
    assert chi_square_p(torch.bincount(picks, minlength=len(LOGITS)), PROBS) > 0.01


def test_seeded_gumbel_is_deterministic_per_seed():
    first = draws(SeededGumbelSampler(range(100)), 100)
    again = draws(SeededGumbelSampler(range(100)), 100)
    shifted = draws(SeededGumbelSampler(range(1, 101)), 100)
    assert torch.equal(first, again)
    assert torch.equal(first[1:], shifted[:-1])


# ------------------------------------------------------------------ temperature 0, top-k, top-p
def test_temperature_zero_is_greedy():
    assert len(logits_processors(Sampling(temperature=0, top_p=0.3, top_k=2, freq_penalty=1.0), [0], [0])) == 0
    lm, twin = tiny_lm(), tiny_model()
    prompt = "I hate you because"
    want = ref.greedy(twin, lm.encode(prompt).ids, [], 10, lm.tokenizer.eos_token_id)
    for seed in (0, 1):
        for penalty in (0.0, 1.0):  # TransformerLens ignores the penalty when greedy
            got = lm.complete([prompt], seed=seed, temperature=0, freq_penalty=penalty, max_new_tokens=10)[0]
            assert list(got.token_ids) == want
    assert list(lm.complete([prompt], top_k=1, max_new_tokens=10)[0].token_ids) == want


def test_sampling_depends_on_the_seed():
    lm = tiny_lm()
    runs = [lm.complete(["I hate you because"], seed=s, max_new_tokens=10)[0].token_ids for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.parametrize(
    ("sampling", "support"),
    [
        (Sampling(top_k=2), {0, 1}),
        (Sampling(top_k=4), {0, 1, 2, 3}),
        (Sampling(top_p=0.7), {0, 1}),
        (Sampling(top_p=0.8), {0, 1, 2}),
        (Sampling(top_p=0.8, top_k=2), {0, 1}),
        (Sampling(temperature=0.5, top_p=0.8), {0}),
        (Sampling(temperature=0.5, top_p=0.9), {0, 1}),
    ],
)
def test_top_k_and_top_p_restrict_the_support(sampling, support):
    n = 4_000
    picks = draws(logits_processors(sampling, range(n), [0] * n), n)
    assert set(picks.tolist()) == support
    # inside the support, frequencies follow the renormalised (tempered) softmax
    keep = sorted(support)
    probs = torch.softmax(LOGITS / sampling.temperature, dim=-1)[keep]
    if len(keep) > 1:
        assert chi_square_p(torch.bincount(picks, minlength=len(LOGITS))[keep], probs) > 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"freq_penalty": float("nan")}, "freq_penalty"),
        ({"freq_penalty": float("inf")}, "freq_penalty"),
    ],
)
def test_bad_sampling_settings_are_refused(kwargs, message):
    with pytest.raises(SteeringError, match=message):
        Sampling(**kwargs)
    with pytest.raises(SteeringError, match=message):
        tiny_lm().complete(["Hi"], max_new_tokens=1, **kwargs)


# ------------------------------------------------------------------ sample_tokens: the decode loop's sampler
def hf_tokens(sampling: Sampling, input_ids, scores, seeds, pads) -> torch.Tensor:
    """The eager path's pick: transformers' processors (via `logits_processors`), then greedy argmax."""
    return logits_processors(sampling, seeds, pads)(input_ids, scores.clone()).argmax(dim=-1)


def fast_tokens(sampling: Sampling, input_ids, scores, seeds, pads, method, dense=True) -> torch.Tensor:
    pad_t = torch.tensor(pads)
    counts = token_counts(input_ids, pad_t, scores)
    positions = input_ids.shape[1] - pad_t
    return sample_tokens(
        scores.clone(),
        sampling,
        seeds=torch.tensor(seeds),
        positions=positions,
        counts=counts,
        top_p_method=method,
        dense_noise=dense,
    )


def random_case(rows: int, vocab: int, width: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (rows, width), generator=generator)
    pads = torch.randint(0, width // 2, (rows,), generator=generator).tolist()
    for row, pad in enumerate(pads):
        input_ids[row, :pad] = 0
    scores = torch.randn(rows, vocab, generator=generator) * spread
    seeds = torch.randint(0, 2**31, (rows,), generator=generator).tolist()
    return input_ids, scores, seeds, pads


SETTINGS = [
    Sampling(),
    Sampling(temperature=0),
    Sampling(top_p=0.3, freq_penalty=1.0),  # the paper's
    Sampling(temperature=0.7, top_p=0.9),
    Sampling(temperature=1.3, top_k=40, freq_penalty=0.5),
    Sampling(top_k=7, top_p=0.5),
    Sampling(top_p=0.02),
    Sampling(top_p=0.999, freq_penalty=-0.3),
]


@pytest.mark.parametrize("method", TOP_P_METHODS)
@pytest.mark.parametrize("sampling", SETTINGS, ids=repr)
@pytest.mark.parametrize("spread", [0.5, 3.0, 12.0])  # flat (thousands kept) to peaked (one or two kept)
def test_sample_tokens_picks_what_the_processors_pick(method, sampling, spread):
    input_ids, scores, seeds, pads = random_case(rows=48, vocab=3000, width=12, spread=spread, seed=int(spread * 10))
    want = hf_tokens(sampling, input_ids, scores, seeds, pads)
    for dense in (True, False):
        got = fast_tokens(sampling, input_ids, scores, seeds, pads, method, dense)
        assert torch.equal(got, want), (method, dense)


def awkward_scores(spread: float, seed: int, rows: int = 64, vocab: int = 5000) -> torch.Tensor:
    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * spread
    scores[:8, ::3] = -torch.inf  # rows already cut by top-k: -inf never enters the nucleus
    scores[8:12] += 100.0  # far from zero: the order key's exponent bits differ from the other rows'
    scores[12:16] -= 100.0
    return scores


@pytest.mark.parametrize("top_p", [0.01, 0.1, 0.3, 0.5, 0.9, 0.99, 0.9999])
@pytest.mark.parametrize("spread", [0.2, 1.0, 4.0, 20.0])
def test_radix_nucleus_is_the_sorted_nucleus(top_p, spread):
    scores = awkward_scores(spread, seed=int(top_p * 1000 + spread))
    want = torch.isfinite(TopPLogitsWarperReference(top_p)(scores.clone()))
    assert torch.equal(_nucleus_radix(scores, top_p), want)
    triton_threshold = _nucleus_threshold(scores, top_p, sampling_kernels.mass_histogram, _RADIX_BITS["triton"])
    assert torch.equal(_order_keys(scores) >= triton_threshold, want)
    kept = want.sum(dim=-1)
    assert kept.min() >= 1
    if spread <= 1.0 and top_p >= 0.3:
        assert kept.min() > 100  # a flat row keeps a large nucleus: no small fixed-size prefilter would hold it


def TopPLogitsWarperReference(top_p):
    from transformers import TopPLogitsWarper

    warper = TopPLogitsWarper(top_p)
    return lambda scores: warper(None, scores)


@pytest.mark.parametrize("digits", sorted(set(_RADIX_BITS.values())))
@pytest.mark.parametrize("spread", [0.2, 4.0, 20.0])
def test_triton_histograms_are_the_torch_histograms(spread, digits):
    """Every pass of the search, in the kernel and in torch ops: the first pass over all tokens (zero masses
    skipped by the kernel, added as zeros by torch), each later one within a bucket of each row. A mass is
    floor(exp(·) × 2⁴⁰) here, and the interpreter's exp (numpy's) and torch's may differ in the last bit,
    which moves a mass by one unit now and then: a bucket may differ by at most one unit per token in it."""
    scores = awkward_scores(spread, seed=int(spread * 10), rows=24, vocab=3000)
    row_max = scores.amax(dim=-1, keepdim=True)
    scale = _mass_scale(scores.shape[-1])
    prefix = torch.zeros(24, 1, dtype=torch.int64)
    shift = 32
    for bits in digits:
        shift -= bits
        want = _torch_histogram(scores, row_max, prefix, shift, bits, scale)
        got = sampling_kernels.mass_histogram(scores, row_max, prefix, shift, bits, scale)
        keys = _order_keys(scores)
        in_scope = (keys >> (shift + bits)) == prefix
        tokens = torch.zeros_like(want).scatter_add_(1, (keys >> shift) & ((1 << bits) - 1), in_scope.double())
        assert ((got - want).abs() <= tokens).all()
        assert torch.equal(got > 0, want > 0)
        assert ((got - want).abs().sum(dim=-1) <= 2).all()  # a handful of units in sums near 2⁵²
        assert want.sum() > 0
        prefix = (prefix << bits) | want.argmax(dim=-1, keepdim=True)  # some occupied bucket of each row


def test_triton_draw_hashes_the_same_noise_as_torch():
    """With equal scores the draw is the argmax of the noise alone: the kernel's 32-bit hash must give the
    very numbers `uniform_noise` gives, token by token (a different hash would pick other tokens)."""
    rows, vocab = 64, 5000
    seeds = torch.randint(0, 2**32, (rows,), generator=torch.Generator().manual_seed(5))
    positions = torch.arange(rows) * 3 + 1
    base = _row_base(seeds, positions)
    open_all = torch.zeros(rows, 1, dtype=torch.int64)
    got = sampling_kernels.gumbel_draw(torch.zeros(rows, vocab), open_all, base)
    assert torch.equal(got, uniform_noise(seeds, positions, vocab).argmax(dim=-1))
    # a nucleus: only tokens at or above the row's threshold may be drawn, and the best of them is
    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(6))
    threshold = _order_keys(scores).kthvalue(vocab - 9, dim=-1, keepdim=True).values  # ten tokens a row
    got = sampling_kernels.gumbel_draw(scores, threshold, base)
    noise = -torch.log(-torch.log(uniform_noise(seeds, positions, vocab))).float()
    want = (scores + noise).masked_fill(_order_keys(scores) < threshold, -torch.inf).argmax(dim=-1)
    assert torch.equal(got, want)


def test_radix_nucleus_of_a_row_does_not_depend_on_its_batch():
    scores = torch.randn(40, 2000, generator=torch.Generator().manual_seed(7))
    batched = _nucleus_radix(scores, 0.3)
    for row in range(0, 40, 7):
        assert torch.equal(_nucleus_radix(scores[row : row + 1], 0.3)[0], batched[row])
        assert torch.equal(_nucleus_radix(scores[row:], 0.3)[0], batched[row])


def test_radix_nucleus_keeps_exact_ties_together():
    # probabilities 0.4, 0.2, 0.2, 0.1, 0.1: top-p 0.5 needs one of the tied 0.2s; the sort keeps the one it
    # orders last, the radix method both (a deterministic rule; exact ties are rare in float32)
    scores = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.1, 0.1]]))
    assert _nucleus_radix(scores, 0.5).tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(TopPLogitsWarperReference(0.5)(scores.clone())).sum() == 2
    assert _nucleus_radix(scores, 0.4).tolist() == [[True, False, False, False, False]]


def test_sample_tokens_follows_the_counts_it_is_given():
    """The decode loop keeps counts incrementally; they must be exactly what the processors recount."""
    input_ids, scores, seeds, pads = random_case(rows=16, vocab=500, width=20, spread=2.0, seed=3)
    sampling = Sampling(top_p=0.8, freq_penalty=2.0)
    pad_t = torch.tensor(pads)
    counts = token_counts(input_ids[:, :10], pad_t, scores)
    for column in range(10, 20):  # add the later tokens one at a time, as the loop does
        counts.scatter_add_(1, input_ids[:, column : column + 1], torch.ones(16, 1))
    assert torch.equal(counts, token_counts(input_ids, pad_t, scores))
    got = sample_tokens(
        scores, sampling, seeds=torch.tensor(seeds), positions=20 - pad_t, counts=counts, top_p_method="radix"
    )
    assert torch.equal(got, hf_tokens(sampling, input_ids, scores, seeds, pads))


def test_sample_tokens_refuses_a_penalty_without_counts_and_an_unknown_method():
    scores = torch.randn(2, 10)
    common = {"seeds": torch.tensor([1, 2]), "positions": torch.tensor([3, 3])}
    with pytest.raises(SteeringError, match="needs the token counts"):
        sample_tokens(scores, Sampling(freq_penalty=1.0), **common)
    with pytest.raises(SteeringError, match="top_p_method: 'heap'"):
        sample_tokens(scores, Sampling(top_p=0.5), top_p_method="heap", **common)
