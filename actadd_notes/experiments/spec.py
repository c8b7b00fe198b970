"""The experiment spec: a note's flat YAML properties, checked once and turned into a typed object.

An experiment note holds its whole spec in its properties; the note body may add prompts.
The tool writes its own progress keys beside the spec (`TOOL_KEYS`: status, started,
finished, progress, result, best_layer, best_coeff, error, run_id); those are ignored here.

```yaml
type: actadd-experiment
model: embedded          # "embedded" (the shipped SmolLM2), a Hugging Face id or a local path
prompt_add: Love         # p+ (required, not empty)
prompt_sub: Hate         # p- (required; " " — the pad token — subtracts the padding alone)
layer: [2, 4, 6, 8, 10]  # grid: an int or a list (inputs of these layers)
coeff: [1, 2, 4, 8]      # grid: a number or a list; negative flips the direction
prompts:                 # a string or a list; a "## Prompts" list in the body is appended; or a data set:
  - I hate you because   #   "[[Data/reviews.csv]]" or {source: …, split: …, column: …, where: …, n: …, seed: …}
samples: 20              # completions per prompt and setting
metrics: [sentiment, fluency]
literature: ["[[@turnerActivationAdditionSteering2024]]"]
```

Every key, its default and its meaning are in the README's key table (a test checks that it
lists every key in `SPEC_KEYS`). An empty property counts as absent.

Other keys are kept in `ExperimentSpec.unknown` and draw a warning, except Obsidian's own
`type`, `tags`, `aliases` and `cssclasses`, and the scaffold's `created`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from actadd_notes.errors import ActaddError, SpecError, note_context
from actadd_notes.experiments.design import (
    DESIGNS,
    HELD_OUT,
    PROMPT_PLACEHOLDER,
    default_design,
    default_prompt_baseline,
    split_prompts,
)
from actadd_notes.experiments.metrics import METRICS, REGISTRY, check_needs
from actadd_notes.experiments.prompt_sets import (
    FileResolver,
    PromptSet,
    is_prompt_source,
    load_prompt_set,
    parse_prompt_source,
)

if TYPE_CHECKING:
    from actadd_notes.steering.decode import DecodeMode
    from actadd_notes.steering.vector_files import VectorFile

TOOL_KEYS: frozenset[str] = frozenset(
    {"status", "started", "finished", "progress", "result", "best_layer", "best_coeff", "error", "run_id"}
)
SPEC_KEYS: frozenset[str] = frozenset(
    {
        "model", "prompt_add", "prompt_sub", "layer", "coeff", "prompts", "samples", "max_new_tokens",
        "seed", "temperature", "top_p", "top_k", "freq_penalty", "metrics", "search", "trials",
        "coeff_scale", "objective", "direction", "max_perplexity_ratio", "max_repetition_increase",
        "max_special_token_increase", "topic", "topic_words",
        "classifier", "chat", "pad_token", "position", "batch_size", "max_generations",
        "extra_additions", "literature", "confirm", "confirm_samples", "dtype",
        "method", "pairs", "pair_position", "offset", "align", "coeff_unit", "decode",
        "confirm_prompts", "prompt_baseline", "prompt_tokens", "vector",
    }
)  # fmt: skip
# Obsidian's own properties (and the scaffold's `created`): kept in `unknown`, not worth a warning.
_QUIET_KEYS = frozenset({"type", "tags", "aliases", "cssclasses", "created"})
# Keys that change no completion and no score (the sampler draws per row, whatever the batch): left out of spec_hash.
_UNHASHED = ("literature", "max_generations", "batch_size")

# Whole-number keys and their minimum; the property name is the field name.
_WHOLE = {
    "samples": 1, "max_new_tokens": 1, "seed": 0, "top_k": 0, "batch_size": 1, "max_generations": 1,
    "confirm_samples": 1, "prompt_tokens": 1,
}  # fmt: skip
# Number keys, the test they must pass, and how to say what is valid.
_NUMBERS: dict[str, tuple[Callable[[float], bool], str]] = {
    # below this, logits / temperature overflow to inf and every completion comes out empty
    "temperature": (lambda x: x >= 1e-3, "must be ≥ 0.001 — for the likeliest token every time, use top_k: 1"),
    "top_p": (lambda x: 0 < x <= 1, "must be in (0, 1]"),
    "freq_penalty": (lambda x: x >= 0, "must be ≥ 0"),
    "max_perplexity_ratio": (lambda x: x >= 1, "must be ≥ 1"),
    "max_repetition_increase": (lambda x: 0 <= x <= 1, "must be in [0, 1] (a share of repeated 3-grams)"),
    "max_special_token_increase": (lambda x: 0 <= x <= 1, "must be in [0, 1] (a share of generated tokens)"),
}
_CHOICES = {
    "search": ("grid", "bayes"),
    "direction": ("maximize", "minimize"),
    "coeff_scale": ("linear", "log"),
    "position": ("front", "all"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "method": ("actadd", "mean_difference", "vector"),
    "pair_position": ("last", "mean"),
    "coeff_unit": ("absolute", "residual_norm"),
    "decode": ("auto", "compiled", "static", "eager"),
    "confirm_prompts": DESIGNS,
}
_CLASSIFIED = tuple(name for name, info in REGISTRY.items() if info.classified)
_ADDITION_KEYS = ("add", "sub", "layer", "coeff")
# The keys that say where each method's vector comes from; another method's draw a warning.
_METHOD_KEYS = {
    "actadd": ("prompt_add", "prompt_sub"),
    "mean_difference": ("pairs", "pair_position"),
    "vector": ("vector",),
}
_MAX_TEMPLATE = 4_000  # characters of a prompting baseline's template
MAX_PAIRS = 2_000  # contrast pairs a mean-difference vector is read from
_MAX_WHOLE = 2**63 - 1  # what a seed or a count may be: a 64-bit integer
_MAX_SHOWN = 80  # characters of a bad value quoted in an error
_PROMPTS_HEADING = re.compile(r"^##\s+prompts\s*$", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s")
_LIST_ITEM = re.compile(r"^\s*[-*+]\s+(.*?)\s*$")

T = TypeVar("T")


@dataclass(frozen=True)
class ExtraAddition:
    """One more steering vector c·(h(add) − h(sub)) at the input of `layer`, on top in every steered setting."""

    add: str
    sub: str
    layer: int
    coeff: float


@dataclass(frozen=True)
class ExperimentSpec:
    """A checked spec; build it with `parse_spec`, which also fills the defaults that depend on other keys.

    Grid search fills `layers` and `coeffs`; bayes fills `layer_range` and `coeff_range` (inclusive).
    """

    prompts: tuple[str, ...]
    prompt_source: PromptSet | None = field(default=None, compare=False, hash=False)  # the data set they came from
    prompt_tokens: int | None = None  # each prompt cut to its first N tokens (applied once the model is loaded)
    confirm_prompts: str = "same"  # held_out: the confirmation runs on prompts the search never saw (design.py)
    prompt_baseline: str | None = None  # the prompting baseline's template ({prompt}); None: none
    prompt_add: str = ""  # actadd: p+ and p−
    prompt_sub: str = ""
    method: str = "actadd"  # or mean_difference: the mean of `pairs`' differences
    pairs: tuple[tuple[str, str], ...] = ()
    pairs_source: str | None = field(default=None, compare=False)  # the note the pairs came from, if one
    pair_position: str = "last"
    vector: str | None = None  # method vector: the link to a vector file (.gguf or .safetensors)
    vector_file: VectorFile | None = field(default=None, compare=False, hash=False, repr=False)  # read and checked
    layers: tuple[int, ...] = ()
    coeffs: tuple[float, ...] = ()
    offsets: tuple[int, ...] = (0,)  # grid: where the front addition starts, after the prompt's first token
    layer_range: tuple[int, int] | None = None
    coeff_range: tuple[float, float] | None = None
    offset_range: tuple[int, int] | None = None
    align: str | None = None  # start the addition where this text first occurs in the prompt
    coeff_unit: str = "absolute"  # or residual_norm: c × the layer's typical residual norm / the vector's norm
    model: str = "embedded"
    samples: int = 10
    max_new_tokens: int = 40
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 0.3
    top_k: int = 0
    freq_penalty: float = 1.0
    metrics: tuple[str, ...] = ("sentiment", "fluency")
    search: str = "grid"
    trials: int | None = None
    coeff_scale: str = "linear"
    objective: str = "sentiment"
    direction: str = "maximize"
    confirm: bool = True
    confirm_samples: int | None = None
    max_perplexity_ratio: float = 1.5
    max_repetition_increase: float = 0.2  # the guard: mean repetition at most this above the baseline's
    max_special_token_increase: float = 0.01  # … and the special-token rate at most this above it
    topic: str | None = None
    topic_words: tuple[str, ...] = ()
    classifier: dict[str, str] = field(default_factory=dict, hash=False)  # metric name -> model
    chat: bool = False
    pad_token: str = " "
    position: str = "front"
    batch_size: int | None = None
    dtype: str = "auto"
    decode: DecodeMode = "auto"  # the engine's decode path; bf16 numbers depend on it
    max_generations: int = 20_000
    extra_additions: tuple[ExtraAddition, ...] = ()
    literature: tuple[str, ...] = ()
    unknown: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The spec as properties that `parse_spec` reads back to an equal spec (without `unknown`)."""
        data = asdict(replace(self, vector_file=None))
        for key in ("unknown", "pairs_source", "prompt_source", "vector_file"):
            del data[key]
        grid = self.search == "grid"
        for key, plural in (("layer", "layers"), ("coeff", "coeffs"), ("offset", "offsets")):
            values, bounds = data.pop(plural), data.pop(f"{key}_range")
            data[key] = values if grid else bounds
        if grid:  # bayes-only keys, left out so they cannot sway spec_hash
            del data["trials"], data["coeff_scale"]
        if self.method == "actadd":
            del data["pairs"], data["pair_position"]
        else:  # the result note's template reads `pairs` of every other method (none for a vector file)
            data["pairs"] = [{"add": add, "sub": sub} for add, sub in self.pairs]
        if self.method == "mean_difference":  # … and the (empty) prompt pair of a vector file's
            del data["prompt_add"], data["prompt_sub"]
        if self.method != "vector":
            del data["vector"]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    def spec_hash(self) -> str:
        """sha256 of what decides the results, so reruns of an unchanged spec can be recognised.

        `batch_size` is not: each row draws from its own seeded stream, whatever shares its batch
        (exactly so in float32; in bf16 on a GPU a row's numbers depend on its batch, which the
        reproducibility record's batch plan shows).
        """
        data = self.to_dict()
        for key in _UNHASHED:
            del data[key]
        if self.vector_file is not None:  # the file's content decides the results, not its name
            data["vector_sha256"] = self.vector_file.sha256
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def prompt_split_sizes(self) -> tuple[int, int]:
        """How many prompts the search and the confirmation run on."""
        split = split_prompts(len(self.prompts), self.seed, self.confirm_prompts)
        return len(split.search), len(split.confirmation)

    @property
    def confirmation_samples(self) -> int:
        """Completions per prompt in the confirmation stage (0 when it is off)."""
        if not self.confirm:
            return 0
        return self.confirm_samples or self.samples


@dataclass(frozen=True)
class WorkEstimate:
    """The size of a run; each baseline counts as one setting, and the confirmation as three or four
    (the best setting, its baseline, the random-direction control and the prompting baseline)."""

    settings: int
    generations: int
    new_tokens: int  # an upper bound: completions may stop early at end-of-text


PairsResolver = Callable[[str], tuple[str, Sequence[tuple[str, str]]]]


def parse_spec(
    properties: Mapping[str, Any],
    body: str = "",
    *,
    note: str | None = None,
    resolve_pairs: PairsResolver | None = None,
    resolve_file: FileResolver | None = None,
    resolve_vector: FileResolver | None = None,
) -> tuple[ExperimentSpec, list[str]]:
    """Check a note's properties (and `## Prompts` body list); return the spec and warnings.

    `resolve_pairs(link)` turns `pairs: "[[a note]]"` into (the note's name, its pairs), and
    `resolve_file(link)` turns `prompts: "[[Data/x.csv]]"` into the file's path in the vault; the vault
    layer provides both, and `resolve_vector(link)` the same for `vector: "[[Vectors/x.gguf]]"`. Prompts from a
    data set and a vector file are read here, before any model loads. Raises
    SpecError naming the key, the bad value and what would be valid.
    """
    with _noted(note):
        return _parse(properties, body, resolve_pairs, resolve_file, resolve_vector)


def check_layers(spec: ExperimentSpec, num_layers: int, model_name: str, *, note: str | None = None) -> None:
    """Refuse layers the model does not have; run once the model is known."""
    valid = f"{model_name} has layers 0–{num_layers - 1}"
    with _noted(note):
        bad = [layer for layer in spec.layers if layer >= num_layers]
        if bad:
            raise SpecError(f"{', '.join(map(str, bad))} — {valid}", key="layer")
        if spec.layer_range is not None and spec.layer_range[1] >= num_layers:
            raise SpecError(f"{list(spec.layer_range)} — {valid}", key="layer")
        for number, addition in enumerate(spec.extra_additions, 1):
            if addition.layer >= num_layers:
                raise SpecError(f"item {number}: layer {addition.layer} — {valid}", key="extra_additions")


def steering_texts(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """Every text the vectors are read from, with the key that holds it: each is one forward pass."""
    texts = [("prompt_add", spec.prompt_add), ("prompt_sub", spec.prompt_sub)] if spec.method == "actadd" else []
    texts += [("pairs", text) for pair in spec.pairs for text in pair]
    texts += [("extra_additions", text) for a in spec.extra_additions for text in (a.add, a.sub)]
    return [(key, text) for key, text in texts if text]


def check_steering_lengths(
    spec: ExperimentSpec, lengths: Sequence[tuple[str, int]], context: int | None, *, note: str | None = None
) -> None:
    """Refuse a steering text longer than the model's context, before its forward pass."""
    too_long = [(key, length) for key, length in lengths if context is not None and length > context]
    if too_long:
        key, length = max(too_long, key=lambda item: item[1])
        with _noted(note):
            raise SpecError(f"a text of {length:,} tokens — the model's context is {context:,}", key=key)


def check_lengths(
    spec: ExperimentSpec,
    prompt_tokens: Sequence[int],
    context: int | None,
    *,
    note: str | None = None,
    key: str = "prompts",
) -> None:
    """Refuse prompts (the prompting baseline's, with `key`) that, with `max_new_tokens`, would not fit the
    model's context (`context` None: unknown)."""
    if context is None:
        return
    longest = max(prompt_tokens)
    if longest + spec.max_new_tokens > context:
        with _noted(note):
            key = "max_new_tokens" if spec.max_new_tokens >= context else key
            raise SpecError(
                f"the longest prompt is {longest:,} tokens and max_new_tokens is {spec.max_new_tokens:,}: "
                f"{longest + spec.max_new_tokens:,} tokens, but the model's context is {context:,} — shorten the "
                "prompt or lower max_new_tokens",
                key=key,
            )


def estimate_work(spec: ExperimentSpec) -> WorkEstimate:
    """Count settings, generations and at most how many tokens a run generates."""
    steered = len(spec.layers) * len(spec.coeffs) if spec.search == "grid" else spec.trials or 0
    searched, confirmed = spec.prompt_split_sizes
    arms = 3 + (spec.prompt_baseline is not None) if spec.confirm else 0
    search = (steered + 1) * searched * spec.samples
    confirmation = arms * confirmed * spec.confirmation_samples
    settings = steered + 1 + arms
    generations = search + confirmation
    return WorkEstimate(settings, generations, generations * spec.max_new_tokens)


def check_work(spec: ExperimentSpec, estimate: WorkEstimate, *, note: str | None = None) -> None:
    """Refuse a run larger than `max_generations`, before any model is loaded."""
    if estimate.generations <= spec.max_generations:
        return
    shrink = "the grid (fewer layers or coeffs" if spec.search == "grid" else "the search (fewer trials"
    with _noted(note):
        raise SpecError(
            f"{estimate.generations:,} generations ({estimate.settings} settings with the baseline"
            f"{' and the confirmation' if spec.confirm else ''} × {len(spec.prompts)} prompts × samples) exceed "
            "max_generations "
            f"{spec.max_generations:,} — raise max_generations or shrink {shrink}, prompts or samples)",
            key="max_generations",
        )


def _parse(
    properties: Mapping[str, Any],
    body: str,
    resolve_pairs: PairsResolver | None,
    resolve_file: FileResolver | None,
    resolve_vector: FileResolver | None = None,
) -> tuple[ExperimentSpec, list[str]]:
    # An empty property (Obsidian's blank field) counts as absent.
    props = {str(key): value for key, value in properties.items() if value is not None}
    warnings: list[str] = []
    unknown = {str(key): value for key, value in properties.items() if str(key) not in SPEC_KEYS | TOOL_KEYS}
    for key in unknown:
        if key not in _QUIET_KEYS:
            guess = difflib.get_close_matches(key, SPEC_KEYS, n=1)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            warnings.append(f"{key}: unknown property{hint} — kept, not used")

    spec: dict[str, Any] = {"unknown": unknown}
    _parse_vector(props, spec, warnings, resolve_pairs, resolve_vector)
    _parse_prompts(props, body, spec, resolve_file)
    _parse_scalars(props, spec)
    _parse_design(props, spec, warnings)
    _parse_placement(props, spec)
    _parse_search(props, spec, warnings)
    _parse_metrics(props, spec, warnings)
    spec["extra_additions"] = tuple(
        _addition(item, number) for number, item in enumerate(_listed(props.get("extra_additions", [])), 1)
    )
    spec["literature"] = tuple(
        _text(item, "literature", hint=' — quote wiki links: "[[@key]]"', item=number)
        for number, item in enumerate(_listed(props.get("literature", [])), 1)
    )
    _check_vector_layers(spec)
    parsed = ExperimentSpec(**spec)
    check_work(parsed, estimate_work(parsed))  # a run too large is refused before any model loads
    return parsed, warnings


def _parse_vector(
    props: dict[str, Any],
    spec: dict[str, Any],
    warnings: list[str],
    resolve_pairs: PairsResolver | None,
    resolve_vector: FileResolver | None = None,
) -> None:
    """The steering vector's source: a prompt pair (actadd), the mean over contrast pairs, or a file."""
    method = spec["method"] = _choice(props.get("method", "actadd"), "method", _CHOICES["method"])
    for key in (key for keys in _METHOD_KEYS.values() for key in keys):
        if key in props and key not in _METHOD_KEYS[method]:
            warnings.append(f"{key}: not used by method: {method} — ignored")
    if method == "actadd":
        _parse_prompt_pair(props, spec)
        return
    if method == "vector":
        _parse_vector_file(props, spec, resolve_vector)
    else:
        _parse_mean_difference(props, spec, resolve_pairs)
    if props.get("position", "all") != "all":
        raise SpecError(
            f"{_show(props['position'])} — method: {method} adds one vector at every position: position: all",
            key="position",
        )
    spec["position"] = "all"


def _parse_mean_difference(props: dict[str, Any], spec: dict[str, Any], resolve_pairs: PairsResolver | None) -> None:
    _parse_pairs(
        _required(props, "pairs", "a list of {add: …, sub: …} or a link to a note of pairs"), spec, resolve_pairs
    )
    if not spec["pairs"]:
        raise SpecError("empty list — give at least one {add: …, sub: …} pair", key="pairs")
    if len(spec["pairs"]) > MAX_PAIRS:
        raise SpecError(
            f"{len(spec['pairs']):,} pairs — at most {MAX_PAIRS:,}; a mean difference is settled long before",
            key="pairs",
        )
    if all(add == sub for add, sub in spec["pairs"]):
        raise SpecError("every pair has add equal to sub — the mean difference would be zero", key="pairs")
    if "pair_position" in props:
        spec["pair_position"] = _choice(props["pair_position"], "pair_position", _CHOICES["pair_position"])


def _parse_vector_file(props: dict[str, Any], spec: dict[str, Any], resolve_vector: FileResolver | None) -> None:
    """`vector: "[[Vectors/x.gguf]]"`, read and checked here, before any model loads; its layers are the
    default `layer` (its lowest to highest with search: bayes)."""
    from actadd_notes.steering.vector_files import VectorFile

    link = _text(_required(props, "vector", 'a link to a vector file, e.g. "[[Vectors/honesty.gguf]]"'), "vector")
    if resolve_vector is None:
        raise SpecError(f"{link} — a link to a vector file needs a vault: run the note with actadd-notes", key="vector")
    try:
        read = VectorFile.read(resolve_vector(link))
    except ActaddError as error:
        raise SpecError(str(error), key="vector") from None
    spec["vector"], spec["vector_file"] = link, read
    bayes = props.get("search") == "bayes"
    props.setdefault("layer", [read.layers[0], read.layers[-1]] if bayes else list(read.layers))


def _check_vector_layers(spec: dict[str, Any]) -> None:
    """Every layer searched must be one the vector file steers."""
    read = spec.get("vector_file")
    if read is None:
        return
    bounds = spec.get("layer_range")
    wanted = range(bounds[0], bounds[1] + 1) if bounds else spec["layers"]
    missing = [layer for layer in wanted if layer not in read.directions]
    if missing:
        raise SpecError(
            f"{missing[0]}: {read.path} steers layers {', '.join(map(str, read.layers))} only "
            "(its direction.N steers layer N + 1)",
            key="layer",
        )


def _parse_prompt_pair(props: dict[str, Any], spec: dict[str, Any]) -> None:
    spec["prompt_add"] = _prompt(_required(props, "prompt_add", "the text whose activations are added"), "prompt_add")
    spec["prompt_sub"] = _text(
        _required(props, "prompt_sub", 'the text whose activations are subtracted (" " for padding alone)'),
        "prompt_sub",
        blank_ok=True,
        hint='; for the padding alone write one space, prompt_sub: " " (the pad token)',
    )
    if spec["prompt_add"] == spec["prompt_sub"]:
        raise SpecError(
            f"{_show(spec['prompt_sub'])} is the same as prompt_add — the steering vector would be zero",
            key="prompt_sub",
        )


def _parse_pairs(pairs: Any, spec: dict[str, Any], resolve_pairs: PairsResolver | None) -> None:
    """A list of {add, sub} in the spec, or a link to a note of pairs (resolved by the vault layer)."""
    if not (isinstance(pairs, str) and pairs.strip().startswith("[[")):
        spec["pairs"] = tuple(_pair(item, number) for number, item in enumerate(_listed(pairs), 1))
        return
    if resolve_pairs is None:
        raise SpecError(f"{pairs} — a link to a pairs note needs a vault: run the note with actadd-notes", key="pairs")
    try:
        spec["pairs_source"], found = resolve_pairs(pairs)
    except ActaddError as error:
        raise SpecError(str(error), key="pairs") from None
    spec["pairs"] = tuple((str(add), str(sub)) for add, sub in found)


def _pair(item: Any, number: int) -> tuple[str, str]:
    if not isinstance(item, Mapping) or set(map(str, item)) != {"add", "sub"}:
        raise SpecError(f"item {number}: {_show(item)} — expected {{add: …, sub: …}}", key="pairs")
    try:
        return _prompt(item["add"], "add"), _prompt(item["sub"], "sub")
    except SpecError as error:
        raise SpecError(f"item {number}: {error}", key="pairs") from None


def _parse_placement(props: dict[str, Any], spec: dict[str, Any]) -> None:
    """Where a front addition starts (`offset`, or `align` on a text) and the coefficient's unit."""
    if "coeff_unit" in props:
        spec["coeff_unit"] = _choice(props["coeff_unit"], "coeff_unit", _CHOICES["coeff_unit"])
    placed = [key for key in ("offset", "align") if key in props]
    if not placed:
        return
    if len(placed) == 2:
        raise SpecError("give offset or align, not both — align sets the offset of each prompt", key="align")
    if spec.get("position", "front") != "front":
        raise SpecError(
            f"{placed[0]} places the front addition — with position: all every position is steered", key=placed[0]
        )
    if "align" in props:
        spec["align"] = _text(props["align"], "align")


def _parse_scalars(props: dict[str, Any], spec: dict[str, Any]) -> None:
    """Keys that stand alone: texts, whole numbers, numbers, choices and flags."""
    if "model" in props:
        spec["model"] = _text(props["model"], "model")
    if "pad_token" in props:
        spec["pad_token"] = _text(props["pad_token"], "pad_token", blank_ok=True)
    if props.get("batch_size") == "auto":
        props = {key: value for key, value in props.items() if key != "batch_size"}
    for key, minimum in _WHOLE.items():
        if key in props:
            spec[key] = _whole(props[key], key, minimum)
    for key, (valid, rule) in _NUMBERS.items():
        if key in props:
            spec[key] = _finite(props[key], key)
            if not valid(spec[key]):
                raise SpecError(f"{_show(props[key])} {rule}", key=key)
    for key, options in _CHOICES.items():
        if key in props:
            spec[key] = _choice(props[key], key, options)
    _parse_flags(props, spec)


def _parse_flags(props: dict[str, Any], spec: dict[str, Any]) -> None:
    for key in ("chat", "confirm"):
        if key in props:
            if not isinstance(props[key], bool):
                raise SpecError(f"{_show(props[key])} — expected true or false", key=key)
            spec[key] = props[key]
    if "confirm_samples" in spec and not spec.get("confirm", True):
        del spec["confirm_samples"]  # nothing to confirm: keep it out of spec_hash


def _parse_search(props: dict[str, Any], spec: dict[str, Any], warnings: list[str]) -> None:
    """Grid: layer and coeff lists. Bayes: layer and coeff ranges, trials, coeff_scale."""
    layer = _required(props, "layer", "a layer number or a list such as [2, 4, 6]")
    coeff = _required(props, "coeff", "a number or a list such as [1, 2, 4]")
    if spec.get("search", "grid") == "grid":
        for key in ("trials", "coeff_scale"):
            if key in props:
                warnings.append(f"{key}: only used with search: bayes — ignored")
        spec.pop("coeff_scale", None)
        spec["layers"] = _grid(layer, "layer", _layer)
        spec["coeffs"] = _grid(coeff, "coeff", _finite)
        if "offset" in props:
            spec["offsets"] = _grid(props["offset"], "offset", _layer)
        return
    spec["trials"] = _whole(props.get("trials", 20), "trials", 1)
    spec["layer_range"] = _range(layer, "layer", _layer)
    if "offset" in props:
        spec["offset_range"] = _range(props["offset"], "offset", _layer)
    low, high = spec["coeff_range"] = _range(coeff, "coeff", _finite)
    if spec.get("coeff_scale") == "log" and low <= 0:
        raise SpecError(
            f"log scale needs a positive coeff range, got {[low, high]} — use coeff_scale: linear", key="coeff_scale"
        )


def _parse_metrics(props: dict[str, Any], spec: dict[str, Any], warnings: list[str]) -> None:
    """Metrics, the objective and its direction, and the keys metrics need (topic, topic_words, classifier)."""
    raw = _listed(props.get("metrics", ["sentiment"]))
    names = _unique([_choice(name, "metrics", METRICS) for name in raw], "metrics")
    if "fluency" not in names:
        names.append("fluency")  # the guard needs it
    spec["metrics"] = tuple(names)

    default = next((name for name in names if name != "fluency"), "fluency")
    objective = spec["objective"] = props.get("objective", default)
    if objective not in names:
        raise SpecError(f"{_show(objective)} — expected {_alternatives(names)} (add it to metrics)", key="objective")
    spec.setdefault("direction", REGISTRY[objective].default_direction)

    if "topic" in props:
        spec["topic"] = _text(props["topic"], "topic")
    if "topic_words" in props:
        spec["topic_words"] = tuple(
            _text(word, "topic_words", item=number) for number, word in enumerate(_listed(props["topic_words"]), 1)
        )
    for key in ("topic", "topic_words"):
        users = [name for name, info in REGISTRY.items() if info.needs == key]
        if spec.get(key) and not set(users) & set(names):
            warnings.append(f"{key}: only used by the {' and '.join(users)} metric — ignored")
            del spec[key]
    spec["classifier"] = _classifiers(props.get("classifier"), names, warnings)
    check_needs(names, {**spec, "classifier": spec["classifier"].get("toxicity")})


def _classifiers(value: Any, metrics: list[str], warnings: list[str]) -> dict[str, str]:
    """Map sentiment/toxicity to a model; a bare id serves whichever of the two is measured."""
    if value is None:
        return {}
    users = [name for name in _CLASSIFIED if name in metrics]
    if isinstance(value, str):
        model = _text(value, "classifier")
        if len(users) > 1:
            raise SpecError(
                f"{model!r} would classify both sentiment and toxicity — give {{sentiment: …, toxicity: …}}, "
                "or leave sentiment out of it to use VADER",
                key="classifier",
            )
        value = {name: model for name in users} or {"sentiment": model}
    if not isinstance(value, Mapping):
        raise SpecError(
            f"{_show(value)} — expected a model id or path, or {{sentiment: …, toxicity: …}}", key="classifier"
        )
    chosen: dict[str, str] = {}
    for metric, model in value.items():
        if metric not in _CLASSIFIED:
            raise SpecError(f"{_show(metric)} — expected sentiment or toxicity as keys", key="classifier")
        if metric not in metrics:
            warnings.append(f"classifier: no {metric} metric to use it — ignored")
            continue
        chosen[metric] = _text(model, "classifier")
    return chosen


def _addition(item: Any, number: int) -> ExtraAddition:
    where = f"item {number}"
    if not isinstance(item, Mapping) or set(map(str, item)) != set(_ADDITION_KEYS):
        raise SpecError(
            f"{where}: {_show(item)} — expected {{add: …, sub: …, layer: …, coeff: …}}", key="extra_additions"
        )
    try:
        return ExtraAddition(
            add=_prompt(item["add"], "add"),
            sub=_text(item["sub"], "sub", empty_ok=True),
            layer=_layer(item["layer"], "layer"),
            coeff=_finite(item["coeff"], "coeff"),
        )
    except SpecError as error:
        raise SpecError(f"{where}: {error}", key="extra_additions") from None


def _parse_prompts(props: dict[str, Any], body: str, spec: dict[str, Any], resolve_file: FileResolver | None) -> None:
    """Prompts typed in the note, or read from a data set (a linked file, a datasets folder or id)."""
    value = props.get("prompts")
    if not is_prompt_source(value):
        spec["prompts"] = _all_prompts(value, body)
        return
    if any(True for _ in _body_prompts(body)):
        raise SpecError(
            'prompts come from a data set and from the "## Prompts" section — use one of them', key="prompts"
        )
    loaded = load_prompt_set(parse_prompt_source(value), resolve_file)
    spec["prompts"], spec["prompt_source"] = loaded.texts, loaded


def _parse_design(props: dict[str, Any], spec: dict[str, Any], warnings: list[str]) -> None:
    """Which prompts the confirmation runs on, and the prompting baseline it compares steering with."""
    count = len(spec["prompts"])
    design = spec.setdefault("confirm_prompts", default_design(count))
    if design == HELD_OUT and count < 2:
        raise SpecError("held_out needs at least 2 prompts — one to search, one to hold out", key="confirm_prompts")
    if not spec.get("confirm", True):
        spec["confirm_prompts"] = "same"  # nothing is confirmed: keep both out of spec_hash
        if "prompt_baseline" in props:
            warnings.append(
                "prompt_baseline: the prompting baseline runs in the confirmation (confirm: false) — ignored"
            )
        return
    value = props.get("prompt_baseline", True)
    if value is False:
        return
    if value is True:
        if spec["method"] != "actadd":
            if "prompt_baseline" in props:
                raise SpecError(
                    f"true — method: {spec['method']} has no single p+ to prompt with: give a template such as "
                    '"Be kind. {prompt}"',
                    key="prompt_baseline",
                )
            return  # said in the result note
        spec["prompt_baseline"] = default_prompt_baseline(spec["prompt_add"])
        return
    template = _text(value, "prompt_baseline", hint=" — a template with {prompt}, or false")
    if PROMPT_PLACEHOLDER not in template or template.strip() == PROMPT_PLACEHOLDER:
        raise SpecError(
            f"{_show(template)} — a template that adds words around {PROMPT_PLACEHOLDER}, e.g. "
            f'"Love. {PROMPT_PLACEHOLDER}"',
            key="prompt_baseline",
        )
    if len(template) > _MAX_TEMPLATE:
        raise SpecError(f"{len(template):,} characters — at most {_MAX_TEMPLATE:,}", key="prompt_baseline")
    spec["prompt_baseline"] = template


def _all_prompts(value: Any, body: str) -> tuple[str, ...]:
    prompts = [_prompt(item, "prompts", item=number) for number, item in enumerate(_listed(value or []), 1)]
    for line_number, text in _body_prompts(body):
        if not text:
            raise SpecError(f'empty prompt in the "## Prompts" section, line {line_number}', key="prompts")
        prompts.append(text)
    if not prompts:
        raise SpecError('no prompts — give a prompts list or a "## Prompts" section', key="prompts")
    return tuple(prompts)


def _body_prompts(body: str) -> Iterator[tuple[int, str]]:
    """List items under `## Prompts`, up to the next heading; `- "…"` keeps spaces inside the quotes."""
    inside = False
    for line_number, line in enumerate(body.splitlines(), 1):
        if _HEADING.match(line):
            inside = bool(_PROMPTS_HEADING.match(line.strip()))
            continue
        item = _LIST_ITEM.match(line) if inside else None
        if item:
            text = item.group(1)
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
                text = text[1:-1]
            yield line_number, text if text.strip() else ""


def _required(props: dict[str, Any], key: str, what: str) -> Any:
    if key not in props:
        raise SpecError(f"missing — give {what}", key=key)
    return props[key]


def _listed(value: Any) -> list[Any]:
    """A list property; a single value counts as a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _grid(value: Any, key: str, convert: Callable[[Any, str], T]) -> tuple[T, ...]:
    if isinstance(value, Mapping):
        raise SpecError(f"{_show(value)} is a range — ranges need search: bayes; list the values for a grid", key=key)
    items = _listed(value)
    if not items:
        raise SpecError("empty list — give at least one value", key=key)
    return tuple(_unique([convert(item, key) for item in items], key))


def _range(value: Any, key: str, convert: Callable[[Any, str], T]) -> tuple[T, T]:
    """`[lo, hi]`, `{min: lo, max: hi}`, or one value that pins the search there."""
    if isinstance(value, Mapping):
        if set(map(str, value)) != {"min", "max"}:
            raise SpecError(f"{_show(value)} — expected {{min: …, max: …}}", key=key)
        bounds = [value["min"], value["max"]]
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(
                f"{_show(value)} — search: bayes expects a range [low, high] or {{min: …, max: …}}", key=key
            )
        bounds = list(value)
    else:
        bounds = [value, value]
    low, high = (convert(bound, key) for bound in bounds)
    if low > high:  # type: ignore[operator]
        raise SpecError(f"{_show(value)} — the low end {low} is above the high end {high}", key=key)
    return low, high


def _unique(values: list[T], key: str) -> list[T]:
    for index, value in enumerate(values):
        if value in values[:index]:
            raise SpecError(f"{_show(value)} is listed twice", key=key)
    return values


def _text(
    value: Any, key: str, *, empty_ok: bool = False, blank_ok: bool = False, hint: str = "", item: int = 0
) -> str:
    """A string; empty only if `empty_ok`, whitespace-only only if `blank_ok` or `empty_ok`."""
    where = f"item {item} " if item else ""
    if not isinstance(value, str):
        raise SpecError(f"{where}{_show(value)} must be a string{hint}", key=key)
    if not empty_ok and (value == "" or not (blank_ok or value.strip())):
        raise SpecError(f"{where}is empty — give a non-empty string{hint}", key=key)
    return value


def _prompt(value: Any, key: str, *, item: int = 0) -> str:
    where = f"item {item}: " if item else ""
    if isinstance(value, str) and not value.strip():
        raise SpecError(f"{where}empty prompt", key=key)
    return _text(value, key, hint=" — quote it", item=item)


def _choice(value: Any, key: str, options: tuple[str, ...] | list[str]) -> str:
    if value not in options or not isinstance(value, str):
        raise SpecError(f"{_show(value)} — expected {_alternatives(options)}", key=key)
    return value


def _whole(value: Any, key: str, minimum: int) -> int:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise SpecError(f"{_show(value)} is not a whole number ≥ {minimum}{_unquote_hint(value)}", key=key)
    if value > _MAX_WHOLE:
        raise SpecError(f"{_show(value)} is too large — at most {_MAX_WHOLE:,}", key=key)
    return int(value)


def _layer(value: Any, key: str) -> int:
    return _whole(value, key, 0)


def _finite(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{_show(value)} is not a number{_unquote_hint(value)}", key=key)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range: YAML reads any number of digits
        raise SpecError(f"{_show(value)} is too large for a number", key=key) from None
    if not math.isfinite(number):
        raise SpecError(f"{_show(value)} must be a finite number", key=key)
    return number


def _unquote_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (it is quoted: write it without quotes)"
    return ""


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, near enough; a long one cut, so no message is a page long."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > _MAX_SHOWN * 3:  # repr of a huge int is itself slow
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    shown = repr(value)
    return shown if len(shown) <= _MAX_SHOWN else f"{shown[: _MAX_SHOWN - 20]}… ({len(shown):,} characters)"


def _alternatives(options: tuple[str, ...] | list[str]) -> str:
    return " or ".join(options) if len(options) <= 2 else f"one of {', '.join(options)}"


@contextmanager
def _noted(note: str | None) -> Iterator[None]:
    if note is None:
        yield
        return
    with note_context(note):
        yield
