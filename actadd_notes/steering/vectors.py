"""ActAdd recipes and the steering vectors computed from them.

An `ActAdd` is what a user writes down (two prompts, a layer, a coefficient); a
`SteeringVector` is what the model turns it into: the per-position difference
h_l(p+) − h_l(p−) of the residual stream at the input of block `l`, shape [T, d],
with the BOS row dropped (it is identical for both prompts, so its difference is 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from actadd_notes.errors import SteeringError

DEFAULT_PAD = " "  # the reference code right-pads the shorter prompt with the space token


@dataclass(frozen=True)
class ActAdd:
    """One activation addition: `coeff · (h_layer(prompt_add) − h_layer(prompt_sub))`.

    Front mode adds it from the prompt's first content token on, `offset` positions later when
    given (the paper's injection position a is offset + 1 where a BOS token comes first)."""

    prompt_add: str
    prompt_sub: str
    layer: int
    coeff: float = 1.0
    pad_token: str = DEFAULT_PAD
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("prompt_add", "prompt_sub"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise SteeringError(f"{name}: empty prompt — give a non-empty string")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteeringError(f"layer: {self.layer!r} must be a whole number ≥ 0")
        if isinstance(self.coeff, bool) or not isinstance(self.coeff, (int, float)):
            raise SteeringError(f"coeff: {self.coeff!r} must be a number")
        if not math.isfinite(self.coeff):
            raise SteeringError(f"coeff: {self.coeff} must be a finite number")
        if not self.pad_token:
            raise SteeringError("pad_token: empty — the reference pads with ' ' (a space)")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise SteeringError(f"offset: {self.offset!r} must be a whole number ≥ 0")


@dataclass(frozen=True)
class SteeringVector:
    """A computed, unscaled ActAdd vector and where it came from; `coeff` scales it when applied."""

    vector: torch.Tensor  # [T, d]: one row per token of the (padded) prompt pair, BOS excluded
    layer: int
    coeff: float = 1.0
    prompt_add: str = ""
    prompt_sub: str = ""
    pad_token: str = DEFAULT_PAD
    add_ids: tuple[int, ...] = ()
    sub_ids: tuple[int, ...] = ()
    provenance: dict[str, str] = field(default_factory=dict)
    offset: int = 0  # the first `offset` rows of `vector` are zeros: the addition starts that much later

    @property
    def positions(self) -> int:
        return int(self.vector.shape[0])

    def with_coeff(self, coeff: float) -> SteeringVector:
        if not math.isfinite(coeff):
            raise SteeringError(f"coeff: {coeff} must be a finite number")
        return replace(self, coeff=float(coeff))

    def scaled(self) -> torch.Tensor:
        return self.vector * self.coeff

    def metadata(self) -> dict[str, str]:
        """The safetensors header: provenance readable without torch."""
        return {
            "format": "actadd-notes/steering-vector/v1",
            "layer": str(self.layer),
            "coeff": repr(self.coeff),
            "prompt_add": self.prompt_add,
            "prompt_sub": self.prompt_sub,
            "pad_token": self.pad_token,
            "add_ids": json.dumps(list(self.add_ids)),
            "sub_ids": json.dumps(list(self.sub_ids)),
            "provenance": json.dumps(self.provenance, sort_keys=True),
            "offset": str(self.offset),
        }

    def to_bytes(self) -> bytes:
        """The vector as a safetensors file's bytes, with `metadata()` in its header."""
        from safetensors.torch import save

        return bytes(save({"vector": self.vector.detach().to("cpu").contiguous()}, metadata=self.metadata()))

    def save(self, path: str | Path) -> Path:
        """Write as safetensors with provenance in the header (readable without torch)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != "actadd-notes/steering-vector/v1":
                raise SteeringError(f"{path}: not an actadd-notes steering vector file")
            vector = handle.get_tensor("vector")
        return cls(
            vector=vector,
            layer=int(meta["layer"]),
            coeff=float(meta["coeff"]),
            prompt_add=meta["prompt_add"],
            prompt_sub=meta["prompt_sub"],
            pad_token=meta["pad_token"],
            add_ids=tuple(json.loads(meta["add_ids"])),
            sub_ids=tuple(json.loads(meta["sub_ids"])),
            provenance=json.loads(meta["provenance"]),
            offset=int(meta.get("offset", "0")),
        )
