"""Steering-vector files read without torch or a model, so a spec that names one fails on its note and
key before any model loads: llama.cpp control vectors (GGUF, from llama.cpp's cvector-generator,
repeng's `export_gguf` or this tool) and this tool's `.safetensors` vectors.

A GGUF file is checked as llama.cpp's loader checks it (control_vectors.py has the format):
`direction.N` tensors, N ≥ 1, F32, one row each, all of one width. `direction.N` steers our
layer N + 1 (the input of block N + 1). A `.safetensors` vector of this tool steers its recorded
layer with coeff × the mean of its rows, what `position: all` adds for it.

Every direction is what one unit of scale adds at every position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from actadd_notes.errors import SteeringError

__all__ = ["ARCHITECTURE", "DIRECTION_PREFIX", "SOURCES_KEY", "UNITS_KEY", "VECTOR_SUFFIXES", "VectorFile"]

ARCHITECTURE = "controlvector"
DIRECTION_PREFIX = "direction."
SOURCES_KEY = "actadd_notes.vectors"  # ours only, ignored by llama.cpp: where each direction came from
UNITS_KEY = "actadd_notes.units"  # ours only: the strength each direction is stored at, and the scales to try
VECTOR_SUFFIXES = (".gguf", ".safetensors")
_SAFETENSORS_FORMAT = "actadd-notes/steering-vector/v1"
# A control vector is n_layers × n_embd floats (16 MiB for 512 layers of 8,192): anything far larger is a model.
_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class VectorFile:
    """The directions of one file by our layer, each [d] float32, with what the file says about them."""

    path: Path
    kind: str  # "gguf" or "safetensors"
    directions: dict[int, npt.NDArray[np.float32]]
    model_hint: str = ""
    units: dict[str, Any] = field(default_factory=dict)  # {} for other tools' files
    sources: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by direction index
    sha256: str = ""

    @classmethod
    def read(cls, path: str | Path) -> VectorFile:
        """Read and check `path` by its extension; SteeringError naming the file when it is not a vector."""
        path = Path(path)
        if path.suffix.lower() not in VECTOR_SUFFIXES:
            raise SteeringError(f"{path}: not a vector file — give a {' or '.join(VECTOR_SUFFIXES)} file")
        try:
            size = path.stat().st_size
            if size > _MAX_BYTES:
                raise SteeringError(
                    f"{path}: {size / 2**20:,.0f} MiB — too large for a vector file (a model?); at most "
                    f"{_MAX_BYTES // 2**20} MiB"
                )
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise SteeringError(f"{path}: no such file") from None
        except OSError as error:
            raise SteeringError(f"{path}: cannot be read ({error.strerror or error})") from None
        if path.suffix.lower() == ".gguf":
            return _read_gguf(path, digest)
        return _read_safetensors(path, digest)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.directions))

    @property
    def width(self) -> int:
        return len(next(iter(self.directions.values())))

    def norm(self, layer: int) -> float:
        return float(np.linalg.norm(self.directions[layer]))

    def check_fits(self, hidden_size: int, num_layers: int, model_name: str) -> None:
        """Refuse a file for another model: another width, or a direction past the model's last block."""
        if self.width != hidden_size:
            raise SteeringError(
                f"{self.path}: directions of width {self.width} do not fit {model_name}, whose hidden size is "
                f"{hidden_size} (the file's model hint is {self.model_hint!r})"
            )
        deeper = [layer for layer in self.layers if layer > num_layers]
        if deeper:
            raise SteeringError(
                f"{self.path}: direction.{deeper[0] - 1} steers the output of block {deeper[0] - 1}, but {model_name} "
                f"has blocks 0–{num_layers - 1}: the file is for a deeper model (hint {self.model_hint!r})"
            )


def _read_gguf(path: Path, digest: str) -> VectorFile:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
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
        index = _direction_index(path, str(tensor.name))
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise SteeringError(
                f"{path}: {tensor.name} is {tensor.tensor_type.name}, but llama.cpp takes F32 directions only"
            )
        shape = [int(n) for n in tensor.shape]  # ggml order: the first is the row length
        if len(shape) == 0 or any(n != 1 for n in shape[1:]):
            raise SteeringError(f"{path}: {tensor.name} has shape {shape}, but a direction is one row of n_embd")
        directions[index + 1] = np.array(tensor.data, dtype=np.float32).reshape(-1)
    _check_directions(path, directions)
    return VectorFile(
        path,
        "gguf",
        directions,
        _string(reader, f"{ARCHITECTURE}.model_hint") or "",
        _json(_string(reader, UNITS_KEY)),
        _sources(_json(_string(reader, SOURCES_KEY))),
        digest,
    )


def _direction_index(path: Path, name: str) -> int:
    suffix = name.removeprefix(DIRECTION_PREFIX)
    if suffix == name or not suffix.isdigit():
        raise SteeringError(f"{path}: tensor {name!r} is not named direction.N, so llama.cpp refuses the file")
    if int(suffix) == 0:
        raise SteeringError(f"{path}: direction.0, which llama.cpp refuses (it never steers block 0's input)")
    return int(suffix)


def _read_safetensors(path: Path, digest: str) -> VectorFile:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != _SAFETENSORS_FORMAT or "vector" not in list(handle.keys()):
                raise SteeringError(f"{path}: not an actadd-notes steering vector file")
            rows = np.asarray(handle.get_tensor("vector"), dtype=np.float32)
        layer, coeff = int(meta["layer"]), float(meta["coeff"])
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise SteeringError(f"{path}: not an actadd-notes steering vector file ({error})") from None
    rows = rows[None, :] if rows.ndim == 1 else rows
    if rows.ndim != 2 or 0 in rows.shape:
        raise SteeringError(f"{path}: the vector has shape {list(rows.shape)}, not [positions, width]")
    directions = {layer: (rows[int(meta.get("offset", "0")) :].mean(axis=0) * coeff).astype(np.float32)}
    _check_directions(path, directions)
    hint = str(_json(meta.get("provenance")).get("model", ""))
    return VectorFile(path, "safetensors", directions, hint, _json(meta.get("units")), {}, digest)


def _check_directions(path: Path, directions: dict[int, npt.NDArray[np.float32]]) -> None:
    if not directions:
        raise SteeringError(f"{path}: holds no direction.N tensors, so it steers no layer")
    widths = {len(d) for d in directions.values()}
    if len(widths) > 1:
        raise SteeringError(f"{path}: directions of different widths {sorted(widths)}; llama.cpp refuses the file")
    if not all(np.isfinite(d).all() for d in directions.values()):
        raise SteeringError(f"{path}: a direction holds NaN or infinite values")


def _string(reader: Any, key: str) -> str | None:
    found = reader.get_field(key)
    if found is None or not found.data:
        return None
    return bytes(found.parts[found.data[0]]).decode("utf-8", errors="replace")


def _sources(data: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Our own record of where each direction came from; {} for a bad record."""
    try:
        return {int(key): [dict(item) for item in value] for key, value in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _json(text: str | None) -> dict[str, Any]:
    """A JSON object of our own metadata; {} when absent or not an object (another tool's file)."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
