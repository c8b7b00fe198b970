"""llama.cpp control vectors: our steering vectors as files `llama-cli --control-vector FILE`
loads, and such files (ours, repeng's, llama.cpp's `cvector-generator`'s) read back.

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

A control vector is one direction for every token, as our `position: all` mode adds a vector's
mean over its positions at every position. The coefficient is baked in: the stored direction
is coeff × (mean over positions of the vector), what our engine adds in `position: all`, so
`--control-vector FILE` (strength 1) steers as the run did, and `--control-vector-scaled FILE S`
scales that by S. Reading gives vectors of shape [1, d] whose `vector` is the stored direction
and whose `coeff` is the strength (1 unless `scale=` says otherwise), to steer with
`lm.generate(..., steer=vectors, position="all")`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from actadd_notes.errors import SteeringError
from actadd_notes.steering.vectors import SteeringVector

if TYPE_CHECKING:
    from actadd_notes.steering.lm import SteerableLM

__all__ = [
    "ARCHITECTURE",
    "ControlVectorWarning",
    "PositionMeanWarning",
    "direction_index",
    "layer_of_direction",
    "load_control_vector",
    "model_hint_of",
    "save_control_vector",
]

ARCHITECTURE = "controlvector"
_PREFIX = "direction."
_SOURCES = "actadd_notes.vectors"  # ours only, ignored by llama.cpp: where each direction came from


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


def model_hint_of(lm: SteerableLM) -> str:
    """What to store as `controlvector.model_hint`: the model's architecture name (`llama`, `qwen2`…),
    as repeng writes it; cvector-generator writes the GGUF architecture, the same name for most."""
    return str(getattr(lm.model.config, "model_type", "") or lm.short_name)


def save_control_vector(path: str | Path, vectors: Sequence[SteeringVector], *, model_hint: str) -> Path:
    """Write `vectors` as one llama.cpp control vector: one `direction.(layer − 1)` per layer, the
    sum of coeff × (mean over positions) of the vectors on that layer. A vector with more than one
    position warns (PositionMeanWarning) that only its mean goes in. The file appears whole or not
    at all (written beside the target, then renamed)."""
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
    return _write(Path(path), directions, sources, model_hint)


def load_control_vector(path: str | Path, lm: SteerableLM | None = None, *, scale: float = 1.0) -> list[SteeringVector]:
    """The file's directions as position-independent steering vectors, sorted by layer:
    `direction.N` becomes a [1, d] vector on our layer N + 1 with coeff `scale` (llama.cpp's
    `--control-vector-scaled` strength). Given `lm`, the width must be its hidden size and every
    direction must steer one of its blocks; the last block's output has no block input of ours
    and is left out with a ControlVectorWarning."""
    if not math.isfinite(scale):
        raise SteeringError(f"scale: {scale} must be a finite number")
    path = Path(path)
    hint, directions, sources = _read(path)
    width = len(next(iter(directions.values())))
    if lm is not None:
        hidden = int(lm.model.get_input_embeddings().weight.shape[-1])
        if width != hidden:
            raise SteeringError(
                f"{path}: directions of width {width} do not fit {lm.short_name}, whose hidden size is {hidden} "
                f"(the file's model hint is {hint!r})"
            )
    vectors = []
    for index in sorted(directions):
        layer = layer_of_direction(index)
        if lm is not None and layer >= lm.num_layers:
            if layer > lm.num_layers:
                raise SteeringError(
                    f"{path}: direction.{index} steers the output of block {index}, but {lm.short_name} has "
                    f"blocks 0–{lm.num_layers - 1}: the file is for a deeper model (hint {hint!r})"
                )
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
                    "tensor": f"{_PREFIX}{index}",
                    "model_hint": hint,
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
) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        writer = gguf.GGUFWriter(temp, ARCHITECTURE)  # sets general.architecture
        writer.add_string(f"{ARCHITECTURE}.model_hint", hint)
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(directions))  # int32, as cvector-generator writes it
        writer.add_string(_SOURCES, json.dumps({str(i): sources[i] for i in sorted(sources)}, sort_keys=True))
        for index in sorted(directions):
            writer.add_tensor(f"{_PREFIX}{index}", np.ascontiguousarray(directions[index], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _read(path: Path) -> tuple[str, dict[int, npt.NDArray[np.float32]], dict[int, list[dict[str, Any]]]]:
    """Hint, directions by index and our provenance, checked as llama.cpp's loader checks them."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise SteeringError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise SteeringError(f"{path}: not a GGUF file ({error})") from None
    architecture = _string(reader, "general.architecture")
    if architecture != ARCHITECTURE:
        raise SteeringError(
            f"{path}: general.architecture is {architecture!r}, not {ARCHITECTURE!r}: "
            "a model or another GGUF file, not a llama.cpp control vector"
        )
    directions: dict[int, npt.NDArray[np.float32]] = {}
    for tensor in reader.tensors:
        name = str(tensor.name)
        suffix = name.removeprefix(_PREFIX)
        if suffix == name or not suffix.isdigit():
            raise SteeringError(f"{path}: tensor {name!r} is not named direction.N, so llama.cpp refuses the file")
        index = int(suffix)
        if index == 0:
            raise SteeringError(f"{path}: direction.0, which llama.cpp refuses (it never steers block 0's input)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise SteeringError(f"{path}: {name} is {tensor.tensor_type.name}, but llama.cpp takes F32 directions only")
        shape = [int(n) for n in tensor.shape]  # ggml order: the first is the row length
        if len(shape) == 0 or any(n != 1 for n in shape[1:]):
            raise SteeringError(f"{path}: {name} has shape {shape}, but a direction is one row of n_embd")
        directions[index] = np.array(tensor.data, dtype=np.float32).reshape(-1)
    if not directions:
        raise SteeringError(f"{path}: holds no direction.N tensors, so it steers no layer")
    widths = {len(d) for d in directions.values()}
    if len(widths) > 1:
        raise SteeringError(f"{path}: directions of different widths {sorted(widths)}; llama.cpp refuses the file")
    hint = _string(reader, f"{ARCHITECTURE}.model_hint") or ""
    return hint, directions, _sources(reader)


def _string(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _sources(reader: Any) -> dict[int, list[dict[str, Any]]]:
    """Our own record of where each direction came from; {} for other tools' files or a bad record."""
    text = _string(reader, _SOURCES)
    if not text:
        return {}
    try:
        data = json.loads(text)
        return {int(key): [dict(item) for item in value] for key, value in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}
