"""Which prompts each stage runs on, and the prompting baseline's text.

A verdict is a claim about prompts, so the prompts it rests on are chosen before anything runs:
- `same`: the confirmation re-runs the search's prompts on fresh seeds. Its claim is about these
  prompts; it cannot speak of others, because the setting was chosen on them.
- `held_out`: the prompts are split, seeded, into a search half and a held-out half; the search
  never sees the held-out prompts, and the confirmation (its baseline, the control and the
  prompting baseline) runs only on them. With enough of them (`HELD_OUT_CLAIM`), a verdict that
  also holds with prompts as the unit speaks of prompts drawn like these, not only of these.

From `HELD_OUT_AUTO` prompts on, `held_out` is the default: each half then has at least
`HELD_OUT_CLAIM` prompts, the fewest for which a t interval over prompts (9 degrees of freedom)
is worth stating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HELD_OUT, SAME = "held_out", "same"
DESIGNS = (HELD_OUT, SAME)
HELD_OUT_CLAIM = 10  # held-out prompts before a verdict speaks beyond them
HELD_OUT_AUTO = 2 * HELD_OUT_CLAIM  # prompts from which confirm_prompts defaults to held_out
PROMPT_PLACEHOLDER = "{prompt}"
_SPLIT_STREAM = 0x5EED  # keeps the split's random stream apart from every other use of the spec's seed


@dataclass(frozen=True)
class PromptSplit:
    """Indexes into the spec's prompts: those the search runs on and those the confirmation runs on."""

    design: str
    search: tuple[int, ...]
    confirmation: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"design": self.design, "search": list(self.search), "confirmation": list(self.confirmation)}


def default_design(prompts: int) -> str:
    return HELD_OUT if prompts >= HELD_OUT_AUTO else SAME


def split_prompts(prompts: int, seed: int, design: str) -> PromptSplit:
    """The split for `prompts` prompts: a seeded half held out (the search keeps the larger half), or
    every prompt in both stages. The same (prompts, seed) always gives the same split."""
    if design == SAME or prompts < 2:
        every = tuple(range(prompts))
        return PromptSplit(SAME, every, every)
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(prompts)
    held = sorted(int(i) for i in order[: prompts // 2])
    search = sorted(int(i) for i in order[prompts // 2 :])
    return PromptSplit(HELD_OUT, tuple(search), tuple(held))


def prompting_text(template: str, prompt: str) -> str:
    """The prompting baseline's prompt: `template` with `{prompt}` replaced (no other formatting, so
    braces in a prompt or a template are only text)."""
    return template.replace(PROMPT_PLACEHOLDER, prompt)


def default_prompt_baseline(prompt_add: str) -> str:
    """p+ placed before the prompt, separated by a space: what ActAdd's steering text would say as words."""
    return f"{prompt_add.strip()} {PROMPT_PLACEHOLDER}"
