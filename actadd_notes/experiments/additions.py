"""What each row of a setting adds to the residual stream: the steering vector (a prompt pair's,
the mean over contrast pairs, or a file's direction at that layer), its random-direction control,
where a front addition starts, and the coefficient actually applied.

The control gives every row its own random direction (seeded by the spec's seed, the layer, the
prompt and the sample), each with the steering vector's per-position norms: how much a random
push of this size moves the objective varies a lot from one direction to the next, so a control
of one direction would be one lucky or unlucky draw; over many rows it estimates the average
random push, and its interval carries the spread between directions.

Coefficients are `absolute` (the paper's c) or in `residual_norm` units: c × the layer's typical
residual norm / the vector's norm, so one coefficient list pushes as hard at every layer. The
typical norm is the median norm of the prompts' residual stream (the first `NORM_PROMPTS`) at that
layer over every token after the first (the first position often carries activations orders of magnitude larger); the
vector's norm is the mean of its rows' norms in front mode (each row lands on one position) and
the norm of its mean row with `position: all` (what is added). Extra additions keep their
absolute coefficients.

The objects handed to the engine are shared by all rows of a setting (equal `ActAdd`s resolve to
one vector; `SteeringVector`s are cached here), so the hooks steer them with one indexed add.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch

from actadd_notes.errors import SpecError, SteeringError
from actadd_notes.experiments.results import Setting
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.steering.contrast import PairDifferences, pair_differences
from actadd_notes.steering.lm import Addition, SteerableLM
from actadd_notes.steering.vectors import ActAdd, SteeringVector

NORM_PROMPTS = 32  # prompts the typical residual norm is measured on


def control_seed(seed: int, layer: int, prompt_index: int = 0, sample: int = 0) -> int:
    """Seeds the random direction of the control's row (prompt, sample) at `layer`."""
    key = f"actadd-control:{seed}:{layer}:{prompt_index}:{sample}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def random_direction_like(vector: SteeringVector, seed: int, position: str) -> SteeringVector:
    """A vector that pushes as hard as `vector` where it is added, in a random direction.

    Front mode adds each position's row: the control keeps every row's norm (zero rows stay zero,
    so an offset stays). `all` mode adds the mean row everywhere: the control is one random row
    with the mean's norm."""
    base = vector.vector.detach().float().cpu()
    target = base.mean(dim=0, keepdim=True) if position == "all" else base
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    direction = noise / noise.norm(dim=-1, keepdim=True)
    control = (direction * target.norm(dim=-1, keepdim=True)).to(vector.vector)
    return replace(
        vector,
        vector=control,
        prompt_add="random direction",
        prompt_sub="",
        provenance={**vector.provenance, "control_seed": str(seed), "control_of": vector.prompt_add},
    )


@dataclass(frozen=True)
class ResidualNorms:
    """Norms of the prompts' residual stream at every layer's input: [layers] each."""

    typical: list[float]  # median over every prompt token after the first
    first: list[float]  # mean over the prompts' first positions

    @classmethod
    def measure(cls, lm: SteerableLM, spec: ExperimentSpec) -> ResidualNorms:
        """Over the spec's first `NORM_PROMPTS` prompts: a data set's hundreds would add a forward
        pass each for a median that is settled long before."""
        per_prompt = []
        for prompt in spec.prompts[:NORM_PROMPTS]:
            stacked, _ = lm.activations([prompt], pad_token=spec.pad_token)
            per_prompt.append(stacked[:, 0].float().norm(dim=-1))  # [layers, T]
        first = torch.stack([n[:, 0] for n in per_prompt]).mean(dim=0)
        rest = [n[:, 1:] for n in per_prompt if n.shape[1] > 1]
        typical = torch.cat(rest, dim=1).median(dim=1).values if rest else first
        return cls([float(x) for x in typical], [float(x) for x in first])


class Additions:
    """Builds, and caches, what each (setting, prompt) row adds."""

    def __init__(self, spec: ExperimentSpec, lm: SteerableLM):
        self.spec = spec
        self.lm = lm
        self._pairs: PairDifferences | None = None
        self._from_file: dict[int, SteeringVector] = {}
        self._norms: ResidualNorms | None = None
        self._aligned: dict[int, int] = {}
        self._controls: dict[tuple[int, int, int, int], SteeringVector] = {}
        self._shared: dict[Setting, SteeringVector] = {}

    # ------------------------------------------------------------- vectors
    def vector(self, layer: int, offset: int = 0) -> SteeringVector:
        """The unscaled steering vector at `layer` (starting `offset` positions late, front mode)."""
        spec = self.spec
        if spec.method == "mean_difference":
            return self.pairs().vector(layer)
        if spec.method == "vector":
            return self.from_file(layer)
        return self.lm.steering_vector(ActAdd(spec.prompt_add, spec.prompt_sub, layer, 1.0, spec.pad_token, offset))

    def from_file(self, layer: int) -> SteeringVector:
        """The vector file's direction at `layer`, [1, d]: what one unit of coeff adds at every position."""
        if layer not in self._from_file:
            assert self.spec.vector_file is not None
            read = self.spec.vector_file
            direction = torch.from_numpy(read.directions[layer].copy())[None, :]
            provenance = {"method": "vector", "source": read.path.name, "format": read.kind, "sha256": read.sha256}
            self._from_file[layer] = SteeringVector(
                direction, layer, prompt_add=f"{read.path.name} at layer {layer}", provenance=provenance
            )
        return self._from_file[layer]

    def pairs(self) -> PairDifferences:
        if self._pairs is None:
            spec = self.spec
            self._pairs = pair_differences(
                self.lm, spec.pairs, pair_position=spec.pair_position, pad_token=spec.pad_token
            )
        return self._pairs

    def control(self, layer: int, offset: int = 0, prompt_index: int = 0, sample: int = 0) -> SteeringVector:
        """The random direction of the control's row (prompt, sample) at `layer`, unscaled."""
        key = (layer, offset, prompt_index, sample)
        if key not in self._controls:
            seed = control_seed(self.spec.seed, layer, prompt_index, sample)
            self._controls[key] = random_direction_like(self.vector(layer, offset), seed, self.spec.position)
        return self._controls[key]

    def norms(self) -> ResidualNorms:
        if self._norms is None:
            self._norms = ResidualNorms.measure(self.lm, self.spec)
        return self._norms

    # ------------------------------------------------------------ placement
    def applied_coeff(self, layer: int, coeff: float) -> float:
        """The raw coefficient the engine applies for the spec's `coeff` at `layer`."""
        if self.spec.coeff_unit == "absolute":
            return coeff
        norm = push_norm(self.vector(layer), self.spec.position)
        if norm == 0:
            raise SpecError(
                f"layer {layer}: the steering vector is zero there — no residual-norm unit", key="coeff_unit"
            )
        return coeff * self.norms().typical[layer] / norm

    def start(self, prompt_index: int) -> int:
        """Where prompt `prompt_index`'s front addition starts, counted from its first content
        token: 0, or where `align`'s text first occurs."""
        spec = self.spec
        if spec.align is None:
            return 0
        if prompt_index not in self._aligned:
            prompt = spec.prompts[prompt_index]
            try:
                self._aligned[prompt_index] = self.lm.token_offset(prompt, spec.align, chat=spec.chat)
            except ValueError:
                raise SpecError(
                    f"{spec.align!r} does not occur in prompt {prompt_index + 1} ({prompt!r}) — give text the "
                    "prompt contains, such as its first words",
                    key="align",
                ) from None
        return self._aligned[prompt_index]

    def check_fits(self) -> None:
        """Refuse, before any generation, a vector file for another model, and a front addition that would run
        past a prompt's end."""
        spec = self.spec
        if spec.vector_file is not None:
            hidden = self.lm.hidden_size
            try:
                spec.vector_file.check_fits(hidden, self.lm.num_layers, self.lm.short_name)
            except SteeringError as error:
                raise SpecError(str(error), key="vector") from None
        if spec.position != "front" or spec.method != "actadd":
            return
        latest = max(spec.offsets) if spec.offset_range is None else spec.offset_range[1]
        # the vector's rows are p+ and p− right-padded to the longer: counted from tokens, before any forward pass
        width = max(self._tokens(spec.prompt_add), self._tokens(spec.prompt_sub))
        for index, prompt in enumerate(spec.prompts):
            encoded = self.lm.encode(prompt, chat=spec.chat)
            room = len(encoded.ids) - encoded.start
            needed = self.start(index) + latest + width
            if needed > room:
                key = "offset" if latest else ("align" if spec.align else "prompts")
                raise SpecError(
                    f"prompt {index + 1} ({prompt!r}) has {room} token(s) from its first on, but the addition "
                    f"({width} position(s)) starting at offset {self.start(index) + latest} needs {needed} — "
                    "lower the offset, or use a longer prompt or shorter steering prompts",
                    key=key,
                )

    def _tokens(self, text: str) -> int:
        return len(self.lm.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def for_row(self, setting: Setting, prompt_index: int, sample: int = 0) -> list[Addition] | None:
        """What row (prompt_index, sample) of `setting` adds (None: the baseline and the prompting baseline)."""
        if not setting.steers:
            return None
        assert setting.layer is not None and setting.coeff is not None
        spec = self.spec
        offset = self.start(prompt_index) + setting.offset
        coeff = self.applied_coeff(setting.layer, setting.coeff)
        main: Addition
        if setting.control:
            main = self.control(setting.layer, offset, prompt_index, sample).with_coeff(coeff)
        elif spec.method != "actadd":
            if setting not in self._shared:
                self._shared[setting] = self.vector(setting.layer).with_coeff(coeff)
            main = self._shared[setting]
        else:
            main = ActAdd(spec.prompt_add, spec.prompt_sub, setting.layer, coeff, spec.pad_token, offset)
        extra = [ActAdd(a.add, a.sub, a.layer, a.coeff, spec.pad_token) for a in spec.extra_additions]
        return [main, *extra]


def push_norm(vector: SteeringVector, position: str) -> float:
    """How hard `vector` pushes where it is added, per unit coefficient (see the module docstring)."""
    rows = vector.vector[vector.offset :].float()
    if position == "all":
        return float(rows.mean(dim=0).norm())
    return float(rows.norm(dim=-1).mean())
