"""Degenerate text perplexity cannot see: loops, and tokens that are not text.

A loop ("Love me, love me, love me") *lowers* perplexity, and special or added tokens either vanish
from the decoded text (special ones, with `skip_special_tokens`) or sit in it as markup Obsidian
hides (Gemma's `<start_of_image>`). Both are measured on the generated token ids, so neither depends
on how a tokenizer turns ids into text; the fluency guard compares them with the baseline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPETITION = "repetition"
SPECIAL_TOKENS = "special_tokens"
NGRAM = 3  # a repeated 3-gram is a loop; repeated words or pairs are ordinary text ("of the")
FLAG_OPEN, FLAG_CLOSE = "⟦", "⟧"


def repetition(token_ids: Sequence[int], n: int = NGRAM) -> float:
    """The share of a completion's token n-grams that repeat an earlier n-gram of it: 0 for text that
    never repeats itself, near 1 for a loop (0 for a completion shorter than n + 1 tokens)."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def non_text_ids(tokenizer: Any) -> frozenset[int]:
    """The tokenizer's special tokens and its added tokens (those not mere whitespace, which some
    tokenizers add for runs of spaces): tokens a model should not spend a completion on. The tokens
    that end a row never reach a completion, so they are not counted against it."""
    added = {index for index, token in tokenizer.added_tokens_decoder.items() if str(token).strip()}
    return frozenset({*tokenizer.all_special_ids, *added})


def special_token_rate(token_ids: Sequence[int], non_text: frozenset[int]) -> float:
    """The share of a completion's generated tokens that are special or added tokens (0 when empty)."""
    if not token_ids:
        return 0.0
    return sum(token in non_text for token in token_ids) / len(token_ids)


def flagged_text(token_ids: Sequence[int], tokenizer: Any, non_text: frozenset[int]) -> str | None:
    """The completion with each special or added token shown as ⟦token⟧, so a reader sees what
    `skip_special_tokens` hides; None when it has none (the decoded text is shown as it is)."""
    if not any(token in non_text for token in token_ids):
        return None
    parts: list[str] = []
    run: list[int] = []
    for token in token_ids:
        if token not in non_text:
            run.append(token)
            continue
        parts.append(tokenizer.decode(run, skip_special_tokens=True))
        parts.append(f"{FLAG_OPEN}{tokenizer.convert_ids_to_tokens(token)}{FLAG_CLOSE}")
        run = []
    parts.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(parts)
