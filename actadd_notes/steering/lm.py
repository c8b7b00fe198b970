"""`SteerableLM`: a Hugging Face causal LM plus tokenizer that can be steered with ActAdd.

Bring your own model (`SteerableLM(model, tokenizer)`) or use `load_model(...)`.
Every method that runs the model takes `steer`, in one of three forms:

* `None` — no steering;
* an `ActAdd` / `SteeringVector`, or a list of them — the same additions on every row;
* a list with one entry per prompt, each `None` or a list of additions — per-row steering,
  which is what makes a whole sweep one batched job.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from actadd_notes.errors import ModelError, SteeringError
from actadd_notes.steering.batching import BatchPlan, DeviceSpec, ModelShape, fixed, generation_plan, scoring_plan
from actadd_notes.steering.decode import (
    DECODE_MODES,
    DecodeCompileError,
    DecodeMode,
    Decoder,
    cut_at_stop,
    decode_support,
)
from actadd_notes.steering.health import check_finite, first_logits
from actadd_notes.steering.hooks import (
    SteeringPlan,
    check_layer,
    everywhere_deltas,
    find_blocks,
    recording_block_inputs,
    steering_hooks,
    steering_suspended,
)
from actadd_notes.steering.sampling import Sampling, logits_processors
from actadd_notes.steering.vectors import ActAdd, SteeringVector

Addition = ActAdd | SteeringVector
Steer = None | Addition | Sequence[Addition] | Sequence[Sequence[Addition] | None]
Progress = Callable[[int, int], None]
PerRow = list[tuple[SteeringVector, ...]]
T = TypeVar("T")


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of one prompt and the index of its first content token (after BOS / chat header)."""

    ids: tuple[int, ...]
    start: int


@dataclass(frozen=True)
class Completion:
    prompt: str
    text: str
    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    seed: int


@dataclass(frozen=True)
class GenerationRecord:
    """How the last `complete` (or `perplexities`) call ran: what a re-run must match to reproduce bf16 rows."""

    call: str  # "complete" or "perplexities"
    decode: str  # "compiled", "static", "eager" or "forward" (scoring)
    reason: str  # why that decode path
    batches: tuple[int, ...]  # rows per forward pass, in order, as run
    plan: str  # what the batch limit came from
    halved: bool  # out-of-memory halving changed the plan
    dtype: str
    device: str
    sampler: str
    stops: tuple[tuple[int, str], ...]  # (id, token) of every token that ends a row; none when scoring

    def to_record(self) -> dict[str, str]:
        """Flat strings for a results' reproducibility record, keys prefixed by the call."""
        prefix = "generation" if self.call == "complete" else "scoring"
        return {
            f"{prefix}_decode": self.decode,
            f"{prefix}_decode_reason": self.reason,
            f"{prefix}_batches": _runs(self.batches),
            f"{prefix}_batch_plan": self.plan + (" — halved after running out of memory" if self.halved else ""),
            f"{prefix}_dtype": self.dtype,
            f"{prefix}_device": self.device,
            f"{prefix}_sampler": self.sampler,
            f"{prefix}_stop_ids": ", ".join(f"{id_} {token}" for id_, token in self.stops) or "none",
        }


def _runs(sizes: Sequence[int]) -> str:
    """`64×6 + 36`: batch sizes with repeats folded."""
    parts: list[str] = []
    index = 0
    while index < len(sizes):
        count = 1
        while index + count < len(sizes) and sizes[index + count] == sizes[index]:
            count += 1
        parts.append(f"{sizes[index]}×{count}" if count > 1 else str(sizes[index]))
        index += count
    return " + ".join(parts) or "0"


def _default_prepend_bos(tokenizer: Any) -> bool:
    """Follow the tokenizer (Llama, Gemma, Mistral add BOS; SmolLM2, Qwen don't), except GPT-2-style
    tokenizers whose BOS is `<|endoftext|>`: TransformerLens, which the ActAdd reference code used,
    prepends it there."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a").input_ids
    if ids and ids[0] == tokenizer.bos_token_id:
        return True
    return bool(tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>")


class SteerableLM:
    """A causal LM with ActAdd steering: vectors, a steering context, batched generation, scores.

    `model` is a transformers causal LM and `tokenizer` its tokenizer (typed loosely: their attributes
    differ by family). `compile_backend` is the `torch.compile` backend of `decode="compiled"`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        block_path: str | None = None,
        prepend_bos: bool | None = None,
        vector_cache_size: int = 64,
        compile_backend: str = "inductor",
    ):
        self.model: Any = model.eval()
        self.tokenizer: Any = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.block_path, self.blocks = find_blocks(model, block_path)
        self.prepend_bos = _default_prepend_bos(tokenizer) if prepend_bos is None else prepend_bos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ModelError(f"{self.name}: the tokenizer has neither a pad nor an EOS token")
        self._vectors: OrderedDict[tuple[str, str, str], tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]] = (
            OrderedDict()
        )
        self._vector_cache_size = vector_cache_size
        self._fingerprint: str | None = None
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.compile_backend = compile_backend
        self._decoders: dict[str, Decoder] = {}
        self._decode_failures: dict[str, str] = {}  # path → why compiling or capturing its step failed
        self.last_generation: GenerationRecord | None = None
        self.last_scoring: GenerationRecord | None = None

    # ----------------------------------------------------------------- facts
    @property
    def hidden_size(self) -> int:
        """The width of the residual stream: what every steering vector's rows must have."""
        return int(self.model.get_input_embeddings().weight.shape[-1])

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.get_input_embeddings().weight.device
        return device

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.model.get_input_embeddings().weight.dtype
        return dtype

    def check_layer(self, layer: int) -> None:
        check_layer(layer, self.num_layers, self.short_name)

    @property
    def short_name(self) -> str:
        return str(self.name).rstrip("/").split("/")[-1]

    def fingerprint(self) -> str:
        """A cheap hash of the weights (a slice of every parameter): identifies the exact model."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, param in self.model.named_parameters():
                digest.update(name.encode())
                digest.update(param.detach().flatten()[:1024].float().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def provenance(self) -> dict[str, str]:
        import transformers

        from actadd_notes import __version__

        revision = getattr(self.model.config, "_commit_hash", None)
        return {
            "model": str(self.name),
            "revision": str(revision or ""),
            "weights_fingerprint": self.fingerprint(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": _device_name(self.device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "actadd_notes": __version__,
        }

    def stop_ids(self, *, chat: bool = False) -> tuple[int, ...]:
        """Every token that ends a row: the tokenizer's EOS, each id of the model's
        `generation_config.eos_token_id` (where instruction-tuned models list their end-of-turn token)
        and, for chat prompts, the special token the chat template closes an assistant turn with."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        listed = configured if isinstance(configured, (list, tuple)) else [configured]
        end_of_turn = _end_of_turn_id(self.tokenizer) if chat else None
        ids = [self.tokenizer.eos_token_id, *listed, end_of_turn]
        return tuple(dict.fromkeys(int(i) for i in ids if i is not None))

    # ------------------------------------------------------------- encoding
    def encode(self, prompt: str, *, chat: bool = False) -> EncodedPrompt:
        if not isinstance(prompt, str) or not prompt.strip():
            raise SteeringError(f"empty prompt {prompt!r} — give some text")
        if chat:
            return self._encode_chat(prompt)
        bos = [self.tokenizer.bos_token_id] if self.prepend_bos else []
        ids = bos + self.tokenizer.encode(prompt, add_special_tokens=False)
        return EncodedPrompt(tuple(ids), len(bos))

    def _encode_chat(self, prompt: str) -> EncodedPrompt:
        """Wrap in the chat template; the content start is the user's message, not the system prompt."""
        text, char_start = self._chat_text(prompt)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start = next(i for i, (_, end) in enumerate(encoding["offset_mapping"]) if end > char_start)
        return EncodedPrompt(tuple(encoding["input_ids"]), start)

    def _chat_text(self, prompt: str) -> tuple[str, int]:
        """The prompt inside the chat template, and the character where the user's message starts."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise SteeringError(f"{self.short_name} has no chat template — set chat: false")
        sentinel = "\ue000"
        marked = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=True
        )
        return marked.replace(sentinel, prompt), marked.index(sentinel)

    def token_offset(self, prompt: str, text: str, *, chat: bool = False) -> int:
        """How many tokens after the prompt's first content token `text` first begins: the offset
        that aligns a front addition on it. ValueError when the prompt does not contain `text`."""
        at = prompt.index(text)
        full, base = self._chat_text(prompt) if chat else (prompt, 0)
        spans = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        first = next(i for i, (_, end) in enumerate(spans) if end > base)
        return next(i for i, (_, end) in enumerate(spans) if end > base + at) - first

    def _pad_id_of(self, pad_token: str) -> int:
        ids = self.tokenizer.encode(pad_token, add_special_tokens=False)
        if len(ids) != 1:
            raise SteeringError(
                f"pad_token {pad_token!r} is {len(ids)} tokens for {self.short_name}; it must be exactly one"
            )
        return int(ids[0])

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        width = max(len(r) for r in rows)
        pads = [width - len(r) for r in rows]
        ids = torch.tensor([[self.pad_id] * p + list(r) for p, r in zip(pads, rows)], device=self.device)
        mask = torch.tensor([[0] * p + [1] * len(r) for p, r in zip(pads, rows)], device=self.device)
        return ids, mask, pads

    # -------------------------------------------------------------- vectors
    def activations(
        self, prompts: Sequence[str], *, pad_token: str = " "
    ) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
        """Residual stream at the input of every block: [layers, len(prompts), T, d], one forward pass.

        Prompts are tokenised like the reference ActAdd code (BOS where the model uses one) and
        right-padded with `pad_token` to a common length; returned ids are the padded ones.
        """
        pad_id = self._pad_id_of(pad_token)
        rows = [list(self.encode(p).ids) for p in prompts]
        width = max(len(r) for r in rows)
        rows = [r + [pad_id] * (width - len(r)) for r in rows]
        tokens = torch.tensor(rows, device=self.device)
        layers = range(self.num_layers)
        with torch.inference_mode(), steering_suspended(), recording_block_inputs(self.blocks, layers) as captured:
            logits = self.model(input_ids=tokens, use_cache=False).logits
            self._check_finite(logits, lambda: self.model(input_ids=tokens, use_cache=False))
        return torch.stack([captured[layer].to(self.device) for layer in layers]), [tuple(r) for r in rows]

    def steering_vector(self, addition: ActAdd) -> SteeringVector:
        """Compute (or reuse) the vector of `addition`; one extraction serves every layer and coeff."""
        self.check_layer(addition.layer)
        key = (addition.prompt_add, addition.prompt_sub, addition.pad_token)
        if key not in self._vectors:
            stacked, (add_ids, sub_ids) = self.activations(
                [addition.prompt_add, addition.prompt_sub], pad_token=addition.pad_token
            )
            skip = 1 if self.prepend_bos else 0  # the BOS row is identical for both prompts
            self._vectors[key] = ((stacked[:, 0] - stacked[:, 1])[:, skip:], add_ids, sub_ids)
            while len(self._vectors) > self._vector_cache_size:
                self._vectors.popitem(last=False)
        self._vectors.move_to_end(key)
        per_layer, add_ids, sub_ids = self._vectors[key]
        vector = per_layer[addition.layer]
        if addition.offset:  # zero rows first: a front addition then starts `offset` positions later
            vector = torch.cat([vector.new_zeros(addition.offset, vector.shape[-1]), vector])
        return SteeringVector(
            vector=vector,
            layer=addition.layer,
            coeff=float(addition.coeff),
            prompt_add=addition.prompt_add,
            prompt_sub=addition.prompt_sub,
            pad_token=addition.pad_token,
            add_ids=add_ids,
            sub_ids=sub_ids,
            provenance={**self.provenance(), "prepend_bos": str(self.prepend_bos)},
            offset=addition.offset,
        )

    def _resolve(
        self, additions: Sequence[Addition], memo: dict[ActAdd, SteeringVector] | None = None
    ) -> tuple[SteeringVector, ...]:
        """ActAdds become vectors; `memo` makes equal ActAdds share one vector object, which the
        hooks use to steer all rows of a setting with one indexed add."""
        memo = {} if memo is None else memo
        resolved = []
        for addition in additions:
            if isinstance(addition, ActAdd):
                if addition not in memo:
                    memo[addition] = self.steering_vector(addition)
                resolved.append(memo[addition])
            elif isinstance(addition, SteeringVector):
                self.check_layer(addition.layer)
                if addition.vector.shape[-1] != self.hidden_size:
                    raise SteeringError(
                        f"steering vector width {addition.vector.shape[-1]} does not match {self.short_name}'s "
                        f"hidden size {self.hidden_size}"
                    )
                resolved.append(addition)
            else:
                raise SteeringError(f"cannot steer with {type(addition).__name__}: give ActAdd or SteeringVector")
        return tuple(resolved)

    def _per_row(self, steer: Steer, rows: int) -> PerRow | None:
        """Normalise the three accepted forms of `steer` to one tuple of vectors per row."""
        if steer is None:
            return None
        if isinstance(steer, (ActAdd, SteeringVector)):
            return [self._resolve([steer])] * rows
        entries: list[Any] = list(steer)
        if all(isinstance(s, (ActAdd, SteeringVector)) for s in entries):
            shared = self._resolve(entries)
            return [shared] * rows
        if len(entries) != rows:
            raise SteeringError(f"steer gives {len(entries)} per-row entries for {rows} prompts; they must match")
        per_row: PerRow = []
        memo: dict[ActAdd, SteeringVector] = {}
        for index, entry in enumerate(entries):
            if entry is None:
                per_row.append(())
            elif isinstance(entry, (list, tuple)):
                per_row.append(self._resolve(entry, memo))
            else:
                raise SteeringError(
                    f"steer[{index}]: per-row entries are None or a list of additions; wrap it in a list"
                )
        return per_row

    @contextmanager
    def steering(self, *additions: Addition, position: str = "front") -> Iterator[tuple[SteeringVector, ...]]:
        """Steer every forward pass inside the block, whoever calls the model.

        Front alignment comes from each batch's attention mask (first real token, after BOS).
        For chat-templated prompts use `generate(..., chat=True, steer=...)`, which aligns to
        the user's message instead.
        """
        vectors = self._resolve(additions)
        plan = SteeringPlan(
            shared=vectors, bos_id=self.tokenizer.bos_token_id if self.prepend_bos else None, position=position
        )
        with steering_hooks(self.model, self.blocks, plan):
            yield vectors

    # ------------------------------------------------------------ inference
    def _forward_logits(self, ids: torch.Tensor, mask: torch.Tensor, keep: int = 0) -> torch.Tensor:
        """Logits of a left-padded batch; `keep` > 0 computes only the last `keep` positions
        (the LM head over a large vocabulary dominates the cost of scoring)."""
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if keep and self._keeps_logits else {}
        logits: torch.Tensor = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False, **extra
        ).logits
        return logits[:, -keep:] if keep else logits

    def next_token_logits(
        self, prompts: Sequence[str], *, steer: Steer = None, chat: bool = False, position: str = "front"
    ) -> torch.Tensor:
        """[batch, vocab] float32 logits at each row's last real token."""
        encoded = [self.encode(p, chat=chat) for p in prompts]
        per_row = self._per_row(steer, len(encoded))
        ids, mask, pads = self._left_pad([e.ids for e in encoded])
        with torch.inference_mode(), self._applied(per_row, encoded, pads, position):
            logits = self._forward_logits(ids, mask, keep=1)[:, -1].float()
            self._check_finite(logits, lambda: self._forward_logits(ids, mask, keep=1))
        return logits

    def _check_finite(self, logits: torch.Tensor, rerun: Callable[[], object]) -> None:
        check_finite(logits, self.blocks, rerun, model_name=self.short_name, dtype=self.dtype)

    def _applied(
        self, per_row: PerRow | None, encoded: Sequence[EncodedPrompt], pads: Sequence[int], position: str
    ) -> AbstractContextManager[None]:
        if per_row is None or not any(per_row):
            return nullcontext()
        starts = tuple(p + e.start for p, e in zip(pads, encoded))
        plan = SteeringPlan(rows=tuple(per_row), starts=starts, position=position)
        return steering_hooks(self.model, self.blocks, plan)

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 30,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        steer: Steer = None,
        chat: bool = False,
        position: str = "front",
        batch_size: int | None = None,
        decode: DecodeMode = "auto",
        progress: Progress | None = None,
        **sampling: Any,
    ) -> list[Completion]:
        """Sample one completion per prompt; row r uses `seeds[r]` (default `seed + r`).

        Sampling keywords: temperature, top_p, top_k, freq_penalty (see `Sampling`). `batch_size` None
        plans batches from the request and the device's total memory (`batching.py`); rows run in those
        batches (halved and retried on out-of-memory). `decode`: `auto` (the static loop, captured as
        CUDA graphs on CUDA; `generate` where unsupported), `compiled` (steps compiled with
        `compile_backend`: the fastest per step once compiled), `static` or `eager` (transformers'
        `generate`); `last_generation` records what ran. `progress(done, total)` is called after each
        batch and may raise to cancel.
        """
        settings = Sampling(**sampling)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SteeringError(f"max_new_tokens: {max_new_tokens!r} must be a whole number ≥ 1")
        if decode not in DECODE_MODES:
            raise SteeringError(f"decode: {decode!r} — expected one of {', '.join(DECODE_MODES)}")
        if seeds is None:
            seeds = [seed + row for row in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise SteeringError(f"{len(seeds)} seeds for {len(prompts)} prompts; they must match")
        encoded = [self.encode(p, chat=chat) for p in prompts]
        per_row = self._per_row(steer, len(prompts))
        SteeringPlan(position=position)  # refuse a bad position before any forward pass
        longest = max((len(e.ids) for e in encoded), default=0)
        path, reason = self._decode_path(decode, longest + max_new_tokens)
        stops = self.stop_ids(chat=chat)
        plan = self._plan(
            batch_size,
            len(prompts),
            lambda shape, device: generation_plan(len(prompts), longest, max_new_tokens, shape, device),
        )
        paths: list[tuple[str, str]] = []

        def run(chunk: slice) -> list[Completion]:
            nonlocal path, reason
            rows = (prompts[chunk], encoded[chunk], list(seeds[chunk]), per_row[chunk] if per_row else None)
            if path != "eager":
                try:
                    done = self._complete_batch_static(
                        self._decoder(path), *rows, settings, max_new_tokens, position, stops
                    )
                    paths.append((path, reason))
                    return done
                except DecodeCompileError as error:
                    self._decode_failures[path] = str(error)
                    path, reason = "eager", f"the {path} decode step failed to build: {error}"
            paths.append((path, reason))
            return self._complete_batch_eager(*rows, settings, max_new_tokens, position, stops)

        results, sizes = self._in_batches(len(prompts), plan, run, progress)
        final_path, final_reason = paths[-1] if paths else (path, reason)
        if len(set(paths)) > 1:
            final_reason = "; then ".join(f"{p}: {r}" for p, r in dict.fromkeys(paths))
        self.last_generation = GenerationRecord(
            call="complete",
            decode=final_path,
            reason=final_reason,
            batches=sizes,
            plan=plan.basis,
            halved=sizes != plan.sizes,
            dtype=str(self.dtype).removeprefix("torch."),
            device=_device_name(self.device),
            sampler=self._sampler_name(final_path, settings),
            stops=tuple((i, str(self.tokenizer.convert_ids_to_tokens(i))) for i in stops),
        )
        return results

    def _decode_path(self, mode: DecodeMode, positions: int) -> tuple[str, str]:
        """The decode path of a call and why. `auto` is the static loop wherever it is supported: never a
        choice that depends on what this process compiled before (bf16 tokens depend on the path)."""
        if mode == "eager":
            return "eager", "decode: eager"
        unsupported = decode_support(self.model, positions)
        if unsupported is not None:
            return "eager", unsupported
        kind = self.device.type
        if mode == "auto" and kind not in ("cuda", "cpu"):
            return "eager", f"{kind}: the static loop is tested on CUDA and the CPU only"
        path = "static" if mode == "auto" else mode
        if path in self._decode_failures:
            return "eager", f"the {path} decode step failed to build earlier: {self._decode_failures[path]}"
        if mode == "auto" and kind == "cuda":
            return "static", (
                "CUDA: static cache, eager kernels captured as CUDA graphs (decode: compiled is faster per "
                "step but compiles 40–70 s per shape)"
            )
        if mode == "auto":
            return "static", "CPU: static cache, steps not compiled (compiling costs more than it saves here)"
        return path, f"decode: {path} ({self._decoder(path).description})"

    def _decoder(self, path: str) -> Decoder:
        if path not in self._decoders:
            backend = self.compile_backend if path == "compiled" else None
            self._decoders[path] = Decoder(self.model, self.blocks, backend=backend)
        return self._decoders[path]

    def _sampler_name(self, path: str, settings: Sampling) -> str:
        if path == "eager":
            return "transformers logits processors + seeded Gumbel"
        if settings.temperature == 0:
            return "greedy"
        decoder = self._decoder(path)
        if decoder.top_p_method == "triton":
            top_p = "top-p and " if settings.top_p < 1 else ""
            return f"sample_tokens ({top_p}seeded Gumbel noise as Triton kernels)"
        noise = "dense" if decoder.dense_noise else "sparse"
        top_p = f"{decoder.top_p_method} top-p" if settings.top_p < 1 else "no top-p"
        return f"sample_tokens ({top_p}, {noise} seeded Gumbel noise)"

    def _plan(
        self, batch_size: int | None, rows: int, auto: Callable[[ModelShape, DeviceSpec], BatchPlan]
    ) -> BatchPlan:
        if batch_size is None:
            return auto(ModelShape.of(self.model, self.num_layers), DeviceSpec.of(self.device))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SteeringError(f"batch_size: {batch_size!r} must be a whole number ≥ 1 (or None: automatic)")
        return fixed(rows, batch_size)

    def _in_batches(
        self, count: int, plan: BatchPlan, run: Callable[[slice], list[T]], progress: Progress | None = None
    ) -> tuple[list[T], tuple[int, ...]]:
        """`run` over consecutive batches as `plan` sizes them; out of memory halves the batch and retries
        (and the rest runs at that size). Returns the results and the batch sizes as run."""
        planned = list(plan.sizes)
        results: list[T] = []
        sizes: list[int] = []
        while len(results) < count:
            want = min(planned[0], count - len(results))
            try:
                results.extend(run(slice(len(results), len(results) + want)))
            except torch.OutOfMemoryError as error:
                if want == 1:
                    raise ModelError(f"{self.short_name}: out of memory even with batch size 1") from error
                _empty_cache(self.device)
                left = count - len(results)
                half = max(1, want // 2)
                planned = [half] * (left // half) + ([left % half] if left % half else [])
                continue
            sizes.append(want)
            planned.pop(0)
            if progress is not None:
                progress(len(results), count)
        return results, tuple(sizes)

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        """Completion texts only; the arguments are those of `complete`."""
        return [c.text for c in self.complete(prompts, **kwargs)]

    def _completions(
        self, prompts: Sequence[str], encoded: Sequence[EncodedPrompt], seeds: Sequence[int], new: list[list[int]]
    ) -> list[Completion]:
        return [
            Completion(prompt, self.tokenizer.decode(tokens, skip_special_tokens=True), e.ids, tuple(tokens), seed)
            for prompt, e, seed, tokens in zip(prompts, encoded, seeds, new)
        ]

    def _complete_batch_static(
        self,
        decoder: Decoder,
        prompts: Sequence[str],
        encoded: Sequence[EncodedPrompt],
        seeds: list[int],
        per_row: PerRow | None,
        settings: Sampling,
        max_new_tokens: int,
        position: str,
        stops: tuple[int, ...],
    ) -> list[Completion]:
        """Prefill with the steering hooks, then the decoder's own loop (`decode.py`).

        Rows with the same prompt and the same vectors (the samples of one setting) have the same
        prefill, so each distinct row is prefilled once and its keys and values serve all its copies."""
        ids, mask, pads = self._left_pad([e.ids for e in encoded])
        slots: dict[tuple[EncodedPrompt, tuple[int, ...]], int] = {}
        source = [
            slots.setdefault((e, tuple(id(v) for v in per_row[r]) if per_row else ()), len(slots))
            for r, e in enumerate(encoded)
        ]
        distinct = [source.index(slot) for slot in range(len(slots))]
        with torch.inference_mode():
            with self._applied(
                [per_row[r] for r in distinct] if per_row else None,
                [encoded[r] for r in distinct],
                [pads[r] for r in distinct],
                position,
            ):
                logits, cache = decoder.prefill(ids[distinct], mask[distinct])
                self._check_finite(logits, lambda: decoder.prefill(ids[distinct], mask[distinct]))
            deltas: dict[int, torch.Tensor] = {}
            if position == "all" and per_row is not None and any(per_row):
                plan = SteeringPlan(rows=tuple(per_row), position="all")
                deltas = everywhere_deltas(plan, len(encoded), self.model.get_input_embeddings().weight)
            new = decoder.decode(
                logits,
                cache,
                torch.tensor(source, device=ids.device),
                ids,
                pads,
                seeds,
                settings,
                max_new_tokens,
                stops,
                deltas,
            )
        return self._completions(prompts, encoded, seeds, new)

    def _complete_batch_eager(
        self,
        prompts: Sequence[str],
        encoded: Sequence[EncodedPrompt],
        seeds: list[int],
        per_row: PerRow | None,
        settings: Sampling,
        max_new_tokens: int,
        position: str,
        stops: tuple[int, ...],
    ) -> list[Completion]:
        """transformers' `generate` with the steering hooks and the seeded logits processors."""
        from transformers import GenerationConfig

        ids, mask, pads = self._left_pad([e.ids for e in encoded])
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=list(stops) or None,
        )
        processors = logits_processors(settings, seeds, pads)
        with torch.inference_mode(), self._applied(per_row, encoded, pads, position):
            with first_logits(self.model) as prefill:
                output = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=config,
                    logits_processor=processors,
                )
            self._check_finite(prefill[0], lambda: self._forward_logits(ids, mask, keep=1))
        new = [cut_at_stop(row, stops) for row in output[:, ids.shape[1] :].tolist()]
        return self._completions(prompts, encoded, seeds, new)

    def scoring_batches(self, completions: Sequence[Completion], *, batch_size: int | None = None) -> BatchPlan:
        """The batches `perplexities` scores these completions in. A batch's padding decides a
        perplexity's last digits, so a scorer elsewhere (a Ray actor) that runs these batches as
        they are gets this process's values exactly."""
        length = max((len(c.prompt_ids) + len(c.token_ids) for c in completions), default=0)
        kept = max((len(c.token_ids) for c in completions), default=0) + 1
        return self._plan(
            batch_size,
            len(completions),
            lambda shape, device: scoring_plan(len(completions), length, kept, shape, device),
        )

    def perplexities(self, completions: Sequence[Completion], *, batch_size: int | None = None) -> list[float]:
        """Perplexity of each completion's tokens given its prompt, under the unsteered model.

        `batch_size` None plans batches as `complete` does; `last_scoring` records them. The decode
        loop's static buffers are freed first: the plan counts on the device's memory, not on
        what generation left allocated."""
        for decoder in self._decoders.values():
            decoder.release()
        _empty_cache(self.device)
        plan = self.scoring_batches(completions, batch_size=batch_size)
        values, sizes = self._in_batches(
            len(completions), plan, lambda chunk: self._perplexity_batch(completions[chunk])
        )
        self.last_scoring = GenerationRecord(
            call="perplexities",
            decode="forward",
            reason="one unsteered forward pass per batch",
            batches=sizes,
            plan=plan.basis,
            halved=sizes != plan.sizes,
            dtype=str(self.dtype).removeprefix("torch."),
            device=_device_name(self.device),
            sampler="none",
            stops=(),
        )
        return values

    def _perplexity_batch(self, chunk: Sequence[Completion]) -> list[float]:
        ids, mask, _ = self._left_pad([c.prompt_ids + c.token_ids for c in chunk])
        keep = max(len(c.token_ids) for c in chunk) + 1
        lengths = torch.tensor([len(c.token_ids) for c in chunk], device=ids.device)
        with torch.inference_mode():
            # position j of the kept logits predicts token j + 1: the last keep − 1 tokens are the targets
            predicted = self._forward_logits(ids, mask, keep=keep)[:, :-1].float()
            targets = ids[:, ids.shape[1] - (keep - 1) :]
            logprobs = predicted.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(predicted, dim=-1)
            # a row's own tokens are its last `length` targets (rows are left-padded)
            own = torch.arange(keep - 1, device=ids.device)[None, :] >= (keep - 1 - lengths)[:, None]
            # inf or NaN in a row's logits makes its log-probabilities non-finite: a check without a copy of them
            self._check_finite(torch.where(own, logprobs, 0.0), lambda: self._forward_logits(ids, mask, keep=keep))
            mean = torch.where(own, logprobs, 0.0).sum(-1) / lengths.clamp(min=1)
            perplexity = torch.where(lengths > 0, torch.exp(-mean), torch.nan)
        return [float(value) for value in perplexity.tolist()]  # one transfer for the batch, not one a row


def _end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template writes right after an assistant message (`<end_of_turn>`,
    `<|eot_id|>`, `<|im_end|>`), or None when the template has none or refuses an assistant turn."""
    from jinja2 import TemplateError

    sentinel = "\ue000"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": sentinel}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except (TemplateError, ValueError):
        return None
    if not isinstance(text, str) or sentinel not in text:
        return None
    after = tokenizer.encode(text[text.index(sentinel) + len(sentinel) :], add_special_tokens=False)
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return int(after[0]) if after and after[0] in special else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
