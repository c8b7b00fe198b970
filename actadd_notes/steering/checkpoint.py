"""Reading a local safetensors checkpoint straight into a model's parameters.

transformers' loader maps each file, copies every tensor into host memory and from there to the
card through pageable memory. Here a few threads read the files with large positioned reads into
buffers of their own (pinned when the model is on a GPU) and copy each piece into the parameter it
belongs to, on the thread's own CUDA stream: on the lent H200 the 14.8 GB of a Llama-3-8B shape took
1.7–1.9 s this way against 2.5–2.9 s through transformers. Only plain checkpoints are read: every
tensor in the files must be a parameter or persistent buffer of the model under the same name and
shape, and every entry of the model's state must come from the files or share its storage with one
that does (tied embeddings). `plan` says why a folder does not qualify, and the caller then uses
transformers (which also renames legacy keys).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
READERS = 4  # a few positioned reads in flight fill the disk; more threads only contend
CHUNK_BYTES = 64 << 20

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class Entry:
    """One tensor of a checkpoint: where its bytes lie and what they are."""

    name: str
    file: Path
    offset: int  # absolute, from the start of the file
    length: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def checkpoint_files(folder: Path) -> list[Path] | str:
    """The safetensors files of a saved model, or why there are none to read."""
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"{INDEX} cannot be read ({error})"
        names = sorted(set(weight_map.values()))
        if any(Path(name).name != name for name in names):
            return f"{INDEX} names files outside the folder"
        return [folder / name for name in names]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    return "no safetensors weights in the folder"


def read_header(path: Path) -> list[Entry]:
    """The tensors a safetensors file holds (its 8-byte length, then a JSON table of offsets)."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 100 << 20:
            raise ValueError(f"{path.name}: a header of {size} bytes is not a safetensors header")
        table = json.loads(handle.read(size))
    start = 8 + size
    entries = []
    for name, info in table.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path.name}: {name} has dtype {info['dtype']}, which this reader does not handle")
        begin, end = info["data_offsets"]
        entries.append(Entry(name, path, start + begin, end - begin, _DTYPES[info["dtype"]], tuple(info["shape"])))
    return entries


def plan(model: torch.nn.Module, folder: Path) -> list[Entry] | str:
    """What to read into `model` from `folder`, or why the folder is not a plain checkpoint of it."""
    if not hasattr(os, "preadv"):
        return "this system has no positioned vector reads"
    files = checkpoint_files(folder)
    if isinstance(files, str):
        return files
    try:
        entries = [entry for path in files for entry in read_header(path)]
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        return f"a weights file cannot be read ({error})"
    # the tensors themselves (tied parameters are one object), so the plan can be made on the meta device
    state = model.state_dict(keep_vars=True)
    loaded: set[int] = set()
    for entry in entries:
        target = state.get(entry.name)
        if target is None:
            return f"the checkpoint's {entry.name} is no parameter of the model (it needs transformers' renaming)"
        if tuple(target.shape) != entry.shape:
            return f"{entry.name} is {list(entry.shape)} in the checkpoint but {list(target.shape)} in the model"
        if entry.length != target.numel() * entry.dtype.itemsize:
            return f"{entry.name}: its byte range does not match its shape"
        loaded.add(id(target))
    names = {entry.name for entry in entries}
    for name, tensor in state.items():
        if name not in names and id(tensor) not in loaded:
            return f"the model's {name} is not in the checkpoint"
    return entries


def load_into(model: torch.nn.Module, entries: list[Entry], *, readers: int = READERS) -> None:
    """Copy every entry's bytes into the model's tensor of that name, casting where the dtypes differ."""
    state = model.state_dict()
    device = next(iter(state.values())).device
    pieces = [piece for entry in entries for piece in _pieces(entry, state[entry.name])]
    buffers = _Buffers(device, pieces)
    with torch.no_grad(), ThreadPoolExecutor(max_workers=readers) as pool:
        list(pool.map(buffers.copy, pieces))
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class _Piece:
    entry: Entry
    begin: int  # within the tensor's bytes
    end: int
    target: torch.Tensor


def _pieces(entry: Entry, target: torch.Tensor) -> Iterator[_Piece]:
    for begin in range(0, entry.length, CHUNK_BYTES):
        yield _Piece(entry, begin, min(begin + CHUNK_BYTES, entry.length), target)


class _Buffers:
    """Per-thread pinned buffers and streams (on a GPU); entries stored in another dtype than their tensor
    are read into a staging tensor, cast once their last piece has arrived."""

    def __init__(self, device: torch.device, pieces: list[_Piece]):
        self.device = device
        self.local = threading.local()
        self.lock = threading.Lock()
        self.staged: dict[str, torch.Tensor] = {}
        self.pending: dict[str, int] = {}
        for piece in pieces:
            self.pending[piece.entry.name] = self.pending.get(piece.entry.name, 0) + 1

    def copy(self, piece: _Piece) -> None:
        destination = self._destination(piece)[piece.begin : piece.end]
        if self.device.type != "cuda":  # host memory: read straight into the tensor's bytes
            _read(piece.entry, piece.begin, memoryview(destination.detach().numpy().data))
            self._cast_if_complete(piece)
            return
        host, stream = self._pinned()
        size = piece.end - piece.begin
        _read(piece.entry, piece.begin, memoryview(host.numpy().data)[:size])
        with torch.cuda.stream(stream):
            destination.copy_(host[:size], non_blocking=True)
            stream.synchronize()  # the piece has arrived, and this thread's buffer is free again
            self._cast_if_complete(piece)
            stream.synchronize()  # before a staging copy is freed

    def _pinned(self) -> tuple[torch.Tensor, torch.cuda.Stream]:
        if not hasattr(self.local, "buffer"):
            self.local.buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8, pin_memory=True)
            self.local.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        return self.local.buffer, self.local.stream

    def _destination(self, piece: _Piece) -> torch.Tensor:
        """The bytes this piece fills: the tensor's own, or those of its staging copy."""
        entry = piece.entry
        if entry.dtype == piece.target.dtype:
            return piece.target.view(-1).view(torch.uint8)
        with self.lock:
            staged = self.staged.get(entry.name)
            if staged is None:
                staged = self.staged[entry.name] = torch.empty(entry.shape, dtype=entry.dtype, device=self.device)
        return staged.view(-1).view(torch.uint8)

    def _cast_if_complete(self, piece: _Piece) -> None:
        """Once all pieces of an entry read into a staging copy have arrived, cast it into the tensor."""
        name = piece.entry.name
        with self.lock:
            self.pending[name] -= 1
            staged = self.staged.pop(name) if self.pending[name] == 0 and name in self.staged else None
        if staged is not None:
            piece.target.copy_(staged)


def _read(entry: Entry, begin: int, into: memoryview) -> None:
    descriptor = os.open(entry.file, os.O_RDONLY)
    try:
        done = 0
        while done < len(into):
            got = os.preadv(descriptor, [into[done:]], entry.offset + begin + done)
            if got == 0:
                raise OSError(f"{entry.file.name} ends inside {entry.name}")
            done += got
    finally:
        os.close(descriptor)
