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
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from actadd_notes.errors import ModelError, SteeringError
from actadd_notes.steering.hooks import (
    SteeringPlan,
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

DEFAULT_BATCH_SIZE = 64


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


def _default_prepend_bos(tokenizer) -> bool:
    """Follow the tokenizer (Llama, Gemma, Mistral add BOS; SmolLM2, Qwen don't), except GPT-2-style
    tokenizers whose BOS is `<|endoftext|>`: TransformerLens, which the ActAdd reference code used,
    prepends it there."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a").input_ids
    if ids and ids[0] == tokenizer.bos_token_id:
        return True
    return tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"


class SteerableLM:
    """A causal LM with ActAdd steering: vectors, a steering context, batched generation, scores."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str | None = None,
        block_path: str | None = None,
        prepend_bos: bool | None = None,
        vector_cache_size: int = 64,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.block_path, self.blocks = find_blocks(model, block_path)
        self.prepend_bos = _default_prepend_bos(tokenizer) if prepend_bos is None else prepend_bos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ModelError(f"{self.name}: the tokenizer has neither a pad nor an EOS token")
        self._vectors: OrderedDict[tuple, tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]] = OrderedDict()
        self._vector_cache_size = vector_cache_size
        self._fingerprint: str | None = None
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    # ----------------------------------------------------------------- facts
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise SteeringError(f"layer {layer}: {self.short_name} has layers 0–{self.num_layers - 1}")

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
        if not getattr(self.tokenizer, "chat_template", None):
            raise SteeringError(f"{self.short_name} has no chat template — set chat: false")
        sentinel = "\ue000"
        marked = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=True
        )
        char_start = marked.index(sentinel)
        text = marked.replace(sentinel, prompt)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start = next(i for i, (_, end) in enumerate(encoding["offset_mapping"]) if end > char_start)
        return EncodedPrompt(tuple(encoding["input_ids"]), start)

    def _pad_id_of(self, pad_token: str) -> int:
        ids = self.tokenizer.encode(pad_token, add_special_tokens=False)
        if len(ids) != 1:
            raise SteeringError(
                f"pad_token {pad_token!r} is {len(ids)} tokens for {self.short_name}; it must be exactly one"
            )
        return ids[0]

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
            self.model(input_ids=tokens, use_cache=False)
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
        return SteeringVector(
            vector=per_layer[addition.layer],
            layer=addition.layer,
            coeff=float(addition.coeff),
            prompt_add=addition.prompt_add,
            prompt_sub=addition.prompt_sub,
            pad_token=addition.pad_token,
            add_ids=add_ids,
            sub_ids=sub_ids,
            provenance={**self.provenance(), "prepend_bos": str(self.prepend_bos)},
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
                if addition.vector.shape[-1] != self.model.get_input_embeddings().weight.shape[-1]:
                    raise SteeringError(
                        f"steering vector width {addition.vector.shape[-1]} does not match {self.short_name}'s "
                        f"hidden size {self.model.get_input_embeddings().weight.shape[-1]}"
                    )
                resolved.append(addition)
            else:
                raise SteeringError(f"cannot steer with {type(addition).__name__}: give ActAdd or SteeringVector")
        return tuple(resolved)

    def _per_row(self, steer: Steer, rows: int) -> list[tuple[SteeringVector, ...]] | None:
        """Normalise the three accepted forms of `steer` to one tuple of vectors per row."""
        if steer is None:
            return None
        if isinstance(steer, (ActAdd, SteeringVector)):
            return [self._resolve([steer])] * rows
        steer = list(steer)
        if all(isinstance(s, (ActAdd, SteeringVector)) for s in steer):
            shared = self._resolve(steer)
            return [shared] * rows
        if len(steer) != rows:
            raise SteeringError(f"steer gives {len(steer)} per-row entries for {rows} prompts; they must match")
        per_row = []
        memo: dict[ActAdd, SteeringVector] = {}
        for index, entry in enumerate(steer):
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
    def steering(self, *additions: Addition, position: str = "front") -> Iterator[SteeringVector]:
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
        logits = self.model(
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
            return self._forward_logits(ids, mask, keep=1)[:, -1].float()

    def _applied(self, per_row, encoded: Sequence[EncodedPrompt], pads: Sequence[int], position: str):
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
        progress: Progress | None = None,
        **sampling: Any,
    ) -> list[Completion]:
        """Sample one completion per prompt; row r uses `seeds[r]` (default `seed + r`).

        Sampling keywords: temperature, top_p, top_k, freq_penalty (see `Sampling`). Rows run in
        batches of `batch_size` (halved and retried on out-of-memory); `progress(done, total)` is
        called after each batch and may raise to cancel.
        """
        settings = Sampling(**sampling)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SteeringError(f"max_new_tokens: {max_new_tokens!r} must be a whole number ≥ 1")
        if seeds is None:
            seeds = [seed + row for row in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise SteeringError(f"{len(seeds)} seeds for {len(prompts)} prompts; they must match")
        encoded = [self.encode(p, chat=chat) for p in prompts]
        per_row = self._per_row(steer, len(prompts))
        return self._in_batches(
            len(prompts),
            batch_size,
            lambda chunk: self._complete_batch(
                prompts[chunk],
                encoded[chunk],
                list(seeds[chunk]),
                per_row[chunk] if per_row else None,
                settings,
                max_new_tokens,
                position,
            ),
            progress,
        )

    def _in_batches(
        self, count: int, batch_size: int | None, run: Callable[[slice], list], progress: Progress | None = None
    ) -> list:
        """`run` over consecutive slices of `count` rows; out of memory halves the batch and retries."""
        size = batch_size or DEFAULT_BATCH_SIZE
        results: list = []
        while len(results) < count:
            chunk = slice(len(results), min(len(results) + size, count))
            try:
                results.extend(run(chunk))
            except torch.OutOfMemoryError as error:
                if size == 1:
                    raise ModelError(f"{self.short_name}: out of memory even with batch size 1") from error
                size = max(1, size // 2)
                _empty_cache(self.device)
                continue
            if progress is not None:
                progress(len(results), count)
        return results

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        """Completion texts only; the arguments are those of `complete`."""
        return [c.text for c in self.complete(prompts, **kwargs)]

    def _complete_batch(
        self, prompts, encoded, seeds, per_row, settings: Sampling, max_new_tokens: int, position: str
    ) -> list[Completion]:
        from transformers import GenerationConfig

        ids, mask, pads = self._left_pad([e.ids for e in encoded])
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=eos,
        )
        processors = logits_processors(settings, seeds, pads)
        with torch.inference_mode(), self._applied(per_row, encoded, pads, position):
            output = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
            )
        completions = []
        for row, prompt in enumerate(prompts):
            new = output[row, ids.shape[1] :].tolist()
            if eos is not None and eos in new:
                new = new[: new.index(eos)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            completions.append(Completion(prompt, text, encoded[row].ids, tuple(new), seeds[row]))
        return completions

    def perplexities(self, completions: Sequence[Completion], *, batch_size: int | None = None) -> list[float]:
        """Perplexity of each completion's tokens given its prompt, under the unsteered model."""
        return self._in_batches(len(completions), batch_size, lambda chunk: self._perplexity_batch(completions[chunk]))

    def _perplexity_batch(self, chunk: Sequence[Completion]) -> list[float]:
        ids, mask, _ = self._left_pad([c.prompt_ids + c.token_ids for c in chunk])
        keep = max(len(c.token_ids) for c in chunk) + 1
        with torch.inference_mode():
            logprobs = torch.log_softmax(self._forward_logits(ids, mask, keep=keep).float(), dim=-1)
        values = []
        for row, completion in enumerate(chunk):
            n = len(completion.token_ids)
            if n == 0:
                values.append(math.nan)
                continue
            targets = ids[row, ids.shape[1] - n :]
            predicted = logprobs[row, keep - n - 1 : keep - 1]
            values.append(float(torch.exp(-predicted.gather(-1, targets[:, None]).mean())))
        return values


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
