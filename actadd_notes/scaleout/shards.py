"""Cutting a call's rows into shards, each named by its content.

A shard's key hashes the model, the spec and its rows (setting, prompt, sample — the seed follows
from them — or, for scoring, the token ids scored), so the same work has the same name in every
run, on every actor and in every retry: the reproducibility record lists shards by key, and a
retried shard is recognisably the same one. Scoring shards hold whole batches of the one-process
plan, never part of one: a batch's padding decides a perplexity's last digits.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actadd_notes.experiments.rows import Row
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.steering.lm import Completion

SHARDS_PER_WORKER = 2  # one running and one queued at each actor: no idle gap between shards
GPU_SHARD_FLOOR = 256  # rows: smaller batches leave an H100 far below its sweep rate


@dataclass(frozen=True)
class Shard:
    number: int  # its place in the call
    start: int  # index of its first row in the call
    size: int  # rows
    work: tuple[Any, ...]  # generation: its `Row`s; scoring: its batches, each a tuple of `Completion`s
    key: str  # content address: model, spec and rows

    @property
    def label(self) -> str:
        return f"shard {self.number + 1} (rows {self.start + 1}–{self.start + self.size}, {self.key[:12]})"


def spec_digest(spec: ExperimentSpec) -> str:
    """A digest of everything in the spec that decides a row's tokens: its repr (deterministic) and its
    hash, which adds what the repr leaves out (an imported vector file's content)."""
    return hashlib.sha256((repr(spec) + spec.spec_hash()).encode()).hexdigest()


def shard_size(rows: int, workers: int, fixed: int | None = None, floor: int = 1) -> int:
    """Rows per shard: `fixed`, or an even split into `SHARDS_PER_WORKER` shards per worker, but not
    below `floor` (a GPU generates a batch of 16 rows at a sixth of the rate of 256: BENCHMARKS.md)."""
    if fixed is not None:
        return max(1, fixed)
    return max(1, floor, math.ceil(rows / (max(1, workers) * SHARDS_PER_WORKER)))


def cut(rows: Sequence[Row], size: int, *, model: str, spec: str) -> list[Shard]:
    """`rows` in consecutive shards of `size` rows (the last one shorter)."""
    shards = []
    for number, start in enumerate(range(0, len(rows), size)):
        part = tuple(rows[start : start + size])
        content = "\n".join([model, spec, *(f"{r.setting!r}|{r.prompt}|{r.sample}" for r in part)])
        shards.append(Shard(number, start, len(part), part, _digest(content)))
    return shards


def cut_batches(
    completions: Sequence[Completion], batches: Sequence[int], size: int, *, model: str, spec: str
) -> list[Shard]:
    """Scoring shards: consecutive whole `batches` (sizes, in order), about `size` rows each."""
    shards: list[Shard] = []
    start, pending, rows = 0, [], 0
    for batch in batches:
        pending.append(tuple(completions[start + rows : start + rows + batch]))
        rows += batch
        if rows >= size or start + rows == len(completions):
            content = "\n".join(
                [model, spec, "score", *(f"{c.prompt_ids}|{c.token_ids}" for part in pending for c in part)]
            )
            shards.append(Shard(len(shards), start, rows, tuple(pending), _digest(content)))
            start, pending, rows = start + rows, [], 0
    return shards


def _digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()
