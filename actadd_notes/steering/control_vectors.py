"""llama.cpp control vectors: our steering vectors as files that
`llama-completion --control-vector-scaled FILE:SCALE` loads, and such files (ours, repeng's, llama.cpp's
`cvector-generator`'s) read back (vector_files.py reads and checks them).

The format, as llama.cpp reads it (common/common.cpp, `common_control_vector_load_one`): a GGUF
file whose tensors are all named `direction.N`, N ≥ 1 (`direction.0` is refused: "invalid (zero)
direction tensor layer index"), each F32, 1-D and of one length, n_embd. Its metadata is not
read there; the writers (tools/cvector-generator/cvector-generator.cpp `export_gguf`, repeng's
`ControlVector.export_gguf`) set `general.architecture = controlvector`,
`controlvector.model_hint` (the model's architecture name) and `controlvector.layer_count`
(how many directions the file holds), and so do we.

Where a direction goes. The loader copies `direction.N` to offset n_embd·(N − 1) of one buffer;
`llama_adapter_cvec::apply` (src/llama-adapter.cpp) fills the tensor of block `il`, for
il = 1 … n_layer − 1, from offset n_embd·(il − 1), so block `il` gets `direction.il`
(`llama_adapter_cvec::init`: "there's never a tensor for layer 0"). `apply_to` adds it where each
model builder calls `build_cvec(cur, il)` (src/llama-graph.cpp; e.g. src/models/llama.cpp):
on `cur` after the block's feed-forward residual add, i.e. the OUTPUT of block `il`, which is
the next block's input. Our `layer l` is the INPUT of block l (TransformerLens' resid_pre),
so layer l is `direction.(l − 1)`:

    layer 0 (the embeddings)  no direction: llama.cpp never steers them
    layer 1                   would be direction.0, which the loader refuses
    layer l ≥ 2               direction.(l − 1)
    direction.(n_layer − 1)   the last block's output, before the final norm: no block
                              input of ours, so reading skips it (with a warning)

repeng agrees: its `read_representations` takes `hidden_states[layer + 1]`, block `layer`'s
output, and `ControlModule.forward` adds `direction.{layer}` to that block's output.
`cvector-generator` records the output of blocks 0 … n − 2 and names block i's
`direction.(i + 1)` (mean.hpp / pca.hpp), so llama.cpp applies its directions one block after
where they were measured; we read them as llama.cpp applies them.

A control vector is one direction for every token, as our `position: all` mode adds one row at
every position. `save_control_vector` stores coeff × (mean over a vector's rows), the row
`position: all` adds, so give it the rows you mean: a front-position ActAdd vector's rows are
not all content — a row where one prompt is padding, or (without a BOS row) the first position,
can carry a massive-activation coordinate orders of magnitude above the rest, and their mean then
mostly pushes that artefact. `export_rows` keeps the content positions only (both prompts have a
real token there); experiments/exports.py chooses and scales what an export holds. Reading gives
vectors of shape [1, d] whose `vector` is the stored direction and whose `coeff` is the strength
(1 unless `scale=` says otherwise), to steer with `lm.generate(..., steer=vectors, position="all")`;
`--control-vector-scaled FILE:S` in llama.cpp scales it by S as `scale=S` does here.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from actadd_notes.errors import SteeringError
from actadd_notes.steering.vector_files import (
    ARCHITECTURE,
    DIRECTION_PREFIX,
    SOURCES_KEY,
    UNITS_KEY,
    VectorFile,
)
from actadd_notes.steering.vectors import SteeringVector

if TYPE_CHECKING:
    from actadd_notes.steering.lm import SteerableLM

__all__ = [
    "ARCHITECTURE",
    "ControlVectorWarning",
    "PositionMeanWarning",
    "direction_index",
    "export_rows",
    "layer_of_direction",
    "load_control_vector",
    "model_hint_of",
    "save_control_vector",
]


class ControlVectorWarning(UserWarning):
    """Something a control-vector file cannot carry, or that reading it had to leave out."""


class PositionMeanWarning(ControlVectorWarning):
    """A per-position ActAdd vector was exported as its mean over positions."""


def direction_index(layer: int) -> int:
    """The `direction.N` that steers our `layer` (the input of block `layer`): N = layer − 1."""
    if layer < 2:
        raise SteeringError(
            f"layer {layer}: llama.cpp cannot steer the input of block {layer}. It adds direction.N to the "
            f"output of block N for N ≥ 1 only (its loader refuses direction.0, and no direction reaches the "
            f"embeddings), so layers 0 and 1 cannot be exported; use a layer ≥ 2"
        )
    return layer - 1


def layer_of_direction(index: int) -> int:
    """Our layer for `direction.index`: the input of block index + 1."""
    if index < 1:
        raise SteeringError(f"direction.{index}: llama.cpp refuses direction indices below 1")
    return index + 1


# transformers' `model_type` → llama.cpp's architecture name (`LLM_ARCH_NAMES`, src/llama-arch.cpp), where they
# differ: the architecture convert_hf_to_gguf.py gives each model class (Mistral and Mixtral convert as `llama`)
_LLAMA_CPP_ARCHITECTURES = {
    "mistral": "llama",
    "mixtral": "llama",
    "gemma3_text": "gemma3",
    "gemma3n_text": "gemma3n",
    "gpt_neox": "gptneox",
    "gpt_bigcode": "starcoder",
    "phi": "phi2",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "cohere": "command-r",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
}


def model_hint_of(lm: SteerableLM) -> str:
    """What to store as `controlvector.model_hint`: the model's architecture as llama.cpp names it (`llama` for
    Mistral, `gemma3` for `gemma3_text`), as cvector-generator writes it; otherwise transformers' `model_type`,
    which is llama.cpp's name for most families (`llama`, `qwen2`, `gemma2`, `phi3`)."""
    model_type = str(getattr(lm.model.config, "model_type", "") or "")
    return _LLAMA_CPP_ARCHITECTURES.get(model_type, model_type) or lm.short_name


def export_rows(vector: SteeringVector, lm: SteerableLM) -> range:
    """The rows of an ActAdd vector where both prompts have a real token: not the padding of the
    shorter one (a lone pad token often carries a massive activation), not the BOS row (dropped
    already) and not the zero rows of an offset. A [1, d] vector (mean difference, a file) is
    its one row."""
    if vector.positions == 1 or not (vector.prompt_add and vector.prompt_sub):
        return range(vector.offset, vector.positions)
    skip = 1 if lm.prepend_bos else 0
    shorter = min(len(lm.encode(text).ids) - skip for text in (vector.prompt_add, vector.prompt_sub))
    return range(vector.offset, vector.offset + shorter)


def save_control_vector(
    path: str | Path,
    vectors: Sequence[SteeringVector],
    *,
    model_hint: str,
    units: Mapping[str, Any] | None = None,
) -> Path:
    """Write `vectors` as one llama.cpp control vector: one `direction.(layer − 1)` per layer, the
    sum of coeff × (mean over rows) of the vectors on that layer. A vector with more than one
    row warns (PositionMeanWarning) that only its mean goes in. `units` (what strength the
    directions are stored at, the scales to try) goes into our metadata. The file appears whole
    or not at all (written beside the target, then renamed)."""
    if not vectors:
        raise SteeringError("no steering vectors to export")
    if not model_hint.strip():
        raise SteeringError("model_hint: empty — give the model's architecture name, e.g. 'llama'")
    directions: dict[int, npt.NDArray[np.float32]] = {}
    sources: dict[int, list[dict[str, Any]]] = {}
    width: int | None = None
    for vector in vectors:
        index = direction_index(vector.layer)
        rows = _rows(vector)
        if width is not None and rows.shape[1] != width:
            raise SteeringError(
                f"layer {vector.layer}: width {rows.shape[1]} differs from the other vectors' {width}; "
                "a control vector is for one model"
            )
        width = int(rows.shape[1])
        if rows.shape[0] > 1:
            warnings.warn(
                f"layer {vector.layer}: the ActAdd vector ({vector.prompt_add!r} − {vector.prompt_sub!r}) has "
                f"{rows.shape[0]} positions, but llama.cpp adds one direction at every token: direction.{index} "
                "holds their mean (what `position: all` adds), not the per-position front addition",
                PositionMeanWarning,
                stacklevel=2,
            )
        direction = (rows * float(vector.coeff)).mean(dim=0).numpy().astype(np.float32)
        directions[index] = directions[index] + direction if index in directions else direction
        sources.setdefault(index, []).append(_source(vector, rows.shape[0]))
    return _write(Path(path), directions, sources, model_hint, dict(units or {}))


def load_control_vector(path: str | Path, lm: SteerableLM | None = None, *, scale: float = 1.0) -> list[SteeringVector]:
    """The file's directions as position-independent steering vectors, sorted by layer:
    `direction.N` becomes a [1, d] vector on our layer N + 1 with coeff `scale` (llama.cpp's
    `--control-vector-scaled` strength). Given `lm`, the width must be its hidden size and every
    direction must steer one of its blocks; the last block's output has no block input of ours
    and is left out with a ControlVectorWarning."""
    if not math.isfinite(scale):
        raise SteeringError(f"scale: {scale} must be a finite number")
    read = VectorFile.read(path)
    path, hint, sources = read.path, read.model_hint, read.sources
    directions = {layer - 1: direction for layer, direction in read.directions.items()}
    if lm is not None:
        read.check_fits(lm.hidden_size, lm.num_layers, lm.short_name)
    vectors = []
    for index in sorted(directions):
        layer = layer_of_direction(index)
        if lm is not None and layer >= lm.num_layers:  # the last block's output: check_fits refused deeper ones
            warnings.warn(
                f"{path}: direction.{index} steers the output of the last block, after which only the final "
                "norm runs; actadd-notes steers block inputs only, so it is left out",
                ControlVectorWarning,
                stacklevel=2,
            )
            continue
        origin = sources.get(index, [])
        single = origin[0] if len(origin) == 1 else {}
        vectors.append(
            SteeringVector(
                vector=torch.from_numpy(directions[index].copy())[None, :],
                layer=layer,
                coeff=float(scale),
                prompt_add=str(single.get("prompt_add", "")),
                prompt_sub=str(single.get("prompt_sub", "")),
                provenance={
                    "source": str(path),
                    "format": "llama.cpp control vector",
                    "tensor": f"{DIRECTION_PREFIX}{index}",
                    "model_hint": hint,
                    **({"units": json.dumps(read.units, sort_keys=True)} if read.units else {}),
                    **({"exported_from": json.dumps(origin, sort_keys=True)} if origin else {}),
                },
            )
        )
    return vectors


def _rows(vector: SteeringVector) -> torch.Tensor:
    """The vector as float32 [T, d] on the CPU; [d] counts as one position."""
    rows = vector.vector.detach().to("cpu", torch.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise SteeringError(f"layer {vector.layer}: a steering vector is [positions, width], not {list(rows.shape)}")
    if not bool(torch.isfinite(rows).all()):
        raise SteeringError(f"layer {vector.layer}: the steering vector holds NaN or infinite values")
    return rows


def _source(vector: SteeringVector, positions: int) -> dict[str, Any]:
    return {
        "layer": vector.layer,
        "coeff": vector.coeff,
        "positions": positions,
        "prompt_add": vector.prompt_add,
        "prompt_sub": vector.prompt_sub,
        "model": vector.provenance.get("model", ""),
        "weights_fingerprint": vector.provenance.get("weights_fingerprint", ""),
    }


def _write(
    path: Path,
    directions: dict[int, npt.NDArray[np.float32]],
    sources: dict[int, list[dict[str, Any]]],
    hint: str,
    units: dict[str, Any],
) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        writer = gguf.GGUFWriter(temp, ARCHITECTURE)  # sets general.architecture
        writer.add_string(f"{ARCHITECTURE}.model_hint", hint)
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(directions))  # int32, as cvector-generator writes it
        writer.add_string(SOURCES_KEY, json.dumps({str(i): sources[i] for i in sorted(sources)}, sort_keys=True))
        if units:
            writer.add_string(UNITS_KEY, json.dumps(units, sort_keys=True))
        for index in sorted(directions):
            writer.add_tensor(f"{DIRECTION_PREFIX}{index}", np.ascontiguousarray(directions[index], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
