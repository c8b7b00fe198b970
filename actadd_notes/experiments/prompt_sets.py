"""Prompts read from a data set, so a spec can steer on 200 IMDb reviews without pasting them.

A spec's `prompts:` is an inline list (spec.py reads it), or names a source:

```yaml
prompts: "[[Data/imdb-negative.csv]]"   # a data file in the vault: every non-empty row, in order
prompts:
  source: stanfordnlp/imdb   # a link as above, a Hugging Face id in the local cache, or a save_to_disk folder
                             # (a folder path: absolute, ~/…, or relative to the working directory)
  split: test                # needed when the source has several splits
  column: text               # default: the column `text`, else the only text column
  where: {label: 0}          # keep rows whose column equals the value (or one of a list)
  n: 200                     # draw this many rows (default: every row)
  seed: 0                    # ... with this seed
```

Files: CSV and TSV (a header row), JSON Lines, Parquet and plain text (one prompt per line), UTF-8,
at most `MAX_FILE_BYTES` and `MAX_FILE_ROWS`; a larger set belongs in a `save_to_disk` folder,
which is memory-mapped and read a column at a time. A Hugging Face id is read from the local
caches only, never from the network (see `_hub_offline`).

Each chosen row keeps its index in the source (`PromptSet.row_ids`) and the source its hash, so a
result can say which rows it read, and a re-run can prove it read the same ones: a draw is
`numpy.random.default_rng(seed).choice(rows, n, replace=False)`, sorted back into the source's
order, a pure function of the source, the filter and the seed.

Every failure is a `SpecError` on `prompts` that names the file or id and says what would work.
datasets and pyarrow are imported only when a source needs them, so importing this stays cheap.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actadd_notes.errors import ActaddError, SpecError

__all__ = [
    "FILE_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_FILE_ROWS",
    "MAX_SAMPLE",
    "MAX_SPEC_STRING_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_WHERE_COLUMNS",
    "MAX_WHERE_VALUES",
    "FileResolver",
    "PromptSet",
    "PromptSource",
    "is_prompt_source",
    "load_prompt_set",
    "parse_prompt_source",
]

# What a file may hold: it is read whole into memory, so it is bounded before (size) and while (rows) reading.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_FILE_ROWS = 200_000
MAX_TEXT_CHARS = 100_000  # one prompt
# What a note may ask for.
MAX_SAMPLE = 100_000  # n
MAX_WHERE_COLUMNS = 16
MAX_WHERE_VALUES = 1_000  # per column
MAX_SPEC_STRING_CHARS = 1_000  # source, split, column, a where column or value
_MAX_SEED = 2**63 - 1
_MAX_INT = 2**63  # where values: what a 64-bit column can hold, near enough
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".txt")

_KEY = "prompts"
_KEYS = ("source", "split", "column", "where", "n", "seed")
_BOM = b"\xef\xbb\xbf"
# A Hugging Face id: `name` or `namespace/name`.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_NUMBER = re.compile(r"^\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|infinity|nan)\s*$", re.I)
# datasets' and huggingface_hub's offline switches are module globals: one loader flips them at a time.
_OFFLINE_LOCK = threading.Lock()

Scalar = str | int | float | bool
_Key = tuple[str, Any]
FileResolver = Callable[[str], Path]
"""Wikilink text → the file's path, confined to the vault (raises ActaddError); the vault layer gives it."""


@dataclass(frozen=True)
class PromptSource:
    """What a spec asked for: where the prompts are and which rows to take."""

    source: str  # the wikilink text, a Hugging Face id, or a folder path, as written
    split: str | None = None
    column: str | None = None
    where: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()  # keep rows whose column equals one of the values
    n: int | None = None  # None: every row
    seed: int = 0

    @property
    def is_link(self) -> bool:
        return _looks_like_link(self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; `parse_prompt_source(source.to_dict()) == source`."""
        return {
            "source": self.source,
            "split": self.split,
            "column": self.column,
            "where": {column: list(values) for column, values in self.where},
            "n": self.n,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class PromptSet:
    """The prompts a source gave, and what a result needs to say where they came from."""

    texts: tuple[str, ...]
    row_ids: tuple[int, ...]  # each text's 0-based row in the source, before `where` and skipping empty rows
    source_hash: str  # "sha256:<hex>" of a file's bytes, "datasets-fingerprint:<fp>" of a datasets split
    description: str  # one line for a note: what was read and how many rows were drawn
    rows_available: int  # rows left after `where` and after dropping empty texts
    empty_rows: int  # rows skipped because their text was empty or whitespace
    source: PromptSource

    def to_record(self) -> dict[str, Any]:
        """Plain JSON for results.json: enough to find each prompt's row again and check the source."""
        return {
            "source": self.source.to_dict(),
            "row_ids": list(self.row_ids),
            "source_hash": self.source_hash,
            "description": self.description,
            "rows_available": self.rows_available,
            "empty_rows": self.empty_rows,
        }


def is_prompt_source(value: Any) -> bool:
    """Whether a spec's `prompts:` names a source (a wikilink or a mapping) rather than listing prompts."""
    return isinstance(value, Mapping) or (isinstance(value, str) and _looks_like_link(value))


def parse_prompt_source(value: Any) -> PromptSource:
    """A checked `PromptSource` from a spec's `prompts:` (a wikilink string, or a mapping with `source`
    and optional split, column, where, n, seed); SpecError naming the bad key, its value and what works."""
    if isinstance(value, str):
        if not _looks_like_link(value):
            raise _error(f'{_show(value)} — give a link to a data file in the vault, e.g. "[[Data/prompts.csv]]"')
        return PromptSource(_string(value, "source"))
    if not isinstance(value, Mapping):
        raise _error(f'{_show(value)} — expected a list of prompts, a link "[[Data/x.csv]]" or {{source: …}}')
    props = {key: item for key, item in value.items() if item is not None}  # a blank property counts as absent
    unknown = [key for key in props if key not in _KEYS]
    if unknown:
        key = unknown[0]
        guess = difflib.get_close_matches(str(key), _KEYS, n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        raise _error(f"unknown key {_show(key)}{hint} — a prompt source takes {', '.join(_KEYS)}")
    if "source" not in props:
        raise _error(
            "source: missing — give a link to a data file, a Hugging Face data set id or a save_to_disk folder"
        )
    return PromptSource(
        source=_string(props["source"], "source"),
        split=_string(props["split"], "split") if "split" in props else None,
        column=_string(props["column"], "column") if "column" in props else None,
        where=_where(props.get("where", {})),
        n=_whole(props["n"], "n", 1, MAX_SAMPLE) if "n" in props else None,
        seed=_whole(props.get("seed", 0), "seed", 0, _MAX_SEED),
    )


def load_prompt_set(source: PromptSource, resolve_file: FileResolver | None = None) -> PromptSet:
    """The prompts `source` names: a linked data file (found with `resolve_file`), a `save_to_disk`
    folder or a Hugging Face id in the local cache; filtered by `where`, empty texts skipped, `n`
    drawn with `seed` and kept in the source's order. SpecError on `prompts` for every failure."""
    if source.is_link:
        if resolve_file is None:
            raise _error(f"{source.source} — a link to a data file needs a vault: run the note with actadd-notes")
        try:
            path = resolve_file(source.source)
        except ActaddError as error:
            raise _error(str(error)) from None
        except OSError as error:
            raise _error(f"{source.source}: cannot find the file: {error.strerror or error}") from None
        rows = _read_file(path, _link_target(source.source), source)
    else:
        rows = _read_datasets(source)
    return _choose(rows, source)


# --- what a source gave: the rows that pass `where` and hold text ------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """What one source gave before the draw: the ids of the rows that may be drawn, and their texts."""

    name: str  # the file, id or folder, for messages and the description
    qualifiers: tuple[str, ...]  # "split test", "where label=0": said after the name
    column: str
    total: int  # rows in the source (in the split)
    row_ids: np.ndarray[Any, np.dtype[np.int64]]  # rows after `where`, with text, in order
    texts: Callable[[np.ndarray[Any, np.dtype[np.int64]]], list[str]]  # positions in row_ids → their texts
    empty: int
    source_hash: str


def _choose(rows: _Rows, source: PromptSource) -> PromptSet:
    available = len(rows.row_ids)
    about = f"{rows.name}{_qualified(rows.qualifiers)}, column {rows.column}"
    if available == 0:
        empty = f" ({rows.empty:,} empty)" if rows.empty else ""
        raise _error(
            f"{about}: no prompts in {rows.total:,} rows{empty}"
            + (" after where — check its columns and values" if source.where else "")
        )
    if source.n is None:
        positions = np.arange(available, dtype=np.int64)
        drawn = f"{available:,} of {available:,} rows"
    else:
        if source.n > available:
            raise _error(
                f"{about}: n is {source.n:,} but only {available:,} rows are available — lower n, or widen where"
            )
        chosen = np.random.default_rng(source.seed).choice(np.arange(available), size=source.n, replace=False)
        positions = np.sort(chosen).astype(np.int64)
        drawn = f"{source.n:,} drawn (seed {source.seed}) of {available:,} rows"
    skipped = f", {rows.empty:,} empty skipped" if rows.empty else ""
    return PromptSet(
        texts=tuple(rows.texts(positions)),
        row_ids=tuple(int(i) for i in rows.row_ids[positions]),
        source_hash=rows.source_hash,
        description=f"{about}: {drawn}{skipped}",
        rows_available=available,
        empty_rows=rows.empty,
        source=source,
    )


def _qualified(qualifiers: Sequence[str]) -> str:
    return f" ({', '.join(qualifiers)})" if qualifiers else ""


def _where_text(where: Sequence[tuple[str, Sequence[Scalar]]]) -> tuple[str, ...]:
    if not where:
        return ()
    parts = [
        f"{column}={_json(values[0])}" if len(values) == 1 else f"{column} in ({', '.join(map(_json, values))})"
        for column, values in where
    ]
    return (f"where {', '.join(parts)}",)


# --- files ------------------------------------------------------------------------------------------------------


class _Reader:
    """A file opened for reading, checked before the first byte is read (a regular file, within
    `MAX_FILE_BYTES`), hashed as it is read, and decoded as UTF-8 line by line with the offset of a
    bad byte."""

    def __init__(self, path: Path, name: str):
        self.name = name
        self.offset = 0
        self.line = 0
        self._hash = hashlib.sha256()
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)  # non-blocking: a FIFO put there since the check must not hang us
        except OSError as error:
            raise _error(f"{name}: cannot open: {error.strerror or error}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _error(f"{name}: not a regular file (a folder, pipe or device) — link a data file")
            _check_size(name, info.st_size)
            self._file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    @property
    def source_hash(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"

    def read_all(self) -> bytes:
        """The whole file (for Parquet, which needs to seek)."""
        chunks = []
        while chunk := self._file.read(min(1 << 20, MAX_FILE_BYTES + 1 - self.offset)):
            self._take(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    def lines(self) -> Iterator[str]:
        """Decoded lines, each with its line ending (a BOM dropped); `line` is its 1-based number."""
        while raw := self._file.readline(MAX_FILE_BYTES + 1 - self.offset):
            start = self.offset
            self._take(raw)
            self.line += 1
            if start == 0 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM) :], len(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start : error.start + 1].hex()
                raise _error(
                    f"{self.name}: not UTF-8 text (byte 0x{byte} at offset {start + error.start:,}, line {self.line}) "
                    "— save the file as UTF-8"
                ) from None
            yield text

    def _take(self, chunk: bytes) -> None:
        self.offset += len(chunk)
        _check_size(self.name, self.offset)  # it may have grown since it was checked
        self._hash.update(chunk)


def _check_size(name: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise _error(
            f"{name}: {size / 2**20:,.0f} MiB — a data file is read whole and may hold at most "
            f"{MAX_FILE_BYTES // 2**20} MiB and {MAX_FILE_ROWS:,} rows; cut it, or save it with datasets' "
            "save_to_disk and give that folder as source (folders are memory-mapped and have no row limit)"
        )


def _too_many_rows(name: str) -> SpecError:
    return _error(
        f"{name}: more than {MAX_FILE_ROWS:,} rows — a data file may hold at most {MAX_FILE_ROWS:,} rows and "
        f"{MAX_FILE_BYTES // 2**20} MiB; cut it, or save it with datasets' save_to_disk and give that folder as "
        "source (folders are memory-mapped and have no row limit)"
    )


@dataclass
class _Table:
    """Rows read from a text file: every column's values (None where a row lacks it), and how to name a row."""

    columns: list[str]
    values: dict[str, list[Any]]
    texty: set[str]  # columns whose values are text (what the only-text-column default picks from)
    cell_keys: Callable[[Any], tuple[_Key, ...]]  # what a cell can equal, as `_value_key` gives a where value
    row_name: Callable[[int], str]  # "line 14"


def _read_file(path: Path, name: str, source: PromptSource) -> _Rows:
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[_Reader], _Table]] = {
        ".csv": lambda reader: _read_delimited(reader, ","),
        ".tsv": lambda reader: _read_delimited(reader, "\t"),
        ".jsonl": _read_jsonl,
        ".txt": _read_text,
    }
    if suffix not in (*readers, ".parquet"):
        raise _error(f"{name}: not a data file the tool reads — use {', '.join(FILE_SUFFIXES)}")
    if source.split is not None:
        raise _error(f"{name}: split {_show(source.split)} — a file has no splits; leave split out")
    with _Reader(path, name) as reader:
        if suffix == ".parquet":
            data = reader.read_all()
            return _parquet_rows(data, name, source, reader.source_hash)
        table = readers[suffix](reader)
        source_hash = reader.source_hash
    return _table_rows(table, name, source, source_hash)


def _read_text(reader: _Reader) -> _Table:
    texts: list[str] = []
    for line in reader.lines():
        if len(texts) >= MAX_FILE_ROWS:
            raise _too_many_rows(reader.name)
        texts.append(line.removesuffix("\n").removesuffix("\r"))
    return _Table(["text"], {"text": texts}, {"text"}, _json_keys, lambda row: f"line {row + 1}")


def _read_delimited(reader: _Reader, delimiter: str) -> _Table:
    records = csv.reader(reader.lines(), delimiter=delimiter)
    lines: list[int] = []  # the line each row starts on
    try:
        header = next(records, None)
        if header is None:
            raise _error(
                f"{reader.name}: empty — a {'CSV' if delimiter == ',' else 'TSV'} file starts with a header row"
            )
        _check_header(header, reader.name)
        rows: list[list[str]] = []
        start = reader.line + 1
        for record in records:
            if not record:  # a blank line is no row (as pandas reads it)
                start = reader.line + 1
                continue
            if len(rows) >= MAX_FILE_ROWS:
                raise _too_many_rows(reader.name)
            if len(record) > len(header):
                raise _error(
                    f"{reader.name}: line {start}: {len(record)} cells under a header of {len(header)} — "
                    "quote cells that hold the delimiter"
                )
            rows.append(record)
            lines.append(start)
            start = reader.line + 1
    except csv.Error as error:
        hint = f" — a prompt may hold at most {MAX_TEXT_CHARS:,} characters" if "field larger" in str(error) else ""
        raise _error(f"{reader.name}: line {reader.line}: {error}{hint}") from None
    values = {column: [row[i] if i < len(row) else None for row in rows] for i, column in enumerate(header)}
    texty = {column for column, cells in values.items() if _texty_cells(cells)}
    return _Table(header, values, texty, _cell_keys, lambda row: f"line {lines[row]}")


def _check_header(header: list[str], name: str) -> None:
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        raise _error(
            f"{name}: the header names {', '.join(map(_show, repeated))} twice — give each column its own name"
        )


def _read_jsonl(reader: _Reader) -> _Table:
    objects: list[dict[str, Any]] = []
    lines: list[int] = []
    columns: dict[str, None] = {}
    for line in reader.lines():
        if not line.strip():
            continue
        if len(objects) >= MAX_FILE_ROWS:
            raise _too_many_rows(reader.name)
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise _error(
                f"{reader.name}: line {reader.line}: not valid JSON ({error}) — one JSON object per line"
            ) from None
        if not isinstance(item, dict):
            raise _error(
                f"{reader.name}: line {reader.line}: {type(item).__name__} — each line must be a JSON object, "
                '{"text": …}'
            )
        objects.append(item)
        lines.append(reader.line)
        columns.update(dict.fromkeys(item))
    values = {column: [item.get(column) for item in objects] for column in columns}
    texty = {
        column
        for column, cells in values.items()
        if any(isinstance(cell, str) for cell in cells) and all(cell is None or isinstance(cell, str) for cell in cells)
    }
    return _Table(list(columns), values, texty, _json_keys, lambda row: f"line {lines[row]}")


def _table_rows(table: _Table, name: str, source: PromptSource, source_hash: str) -> _Rows:
    column = _text_column(table.columns, table.texty, source.column, name)
    count = len(table.values[column])
    keep = [True] * count
    for where_column, wanted in source.where:
        if where_column not in table.values:
            raise _error(f"{name}: where: no column {_show(where_column)} — the columns are {_listed(table.columns)}")
        keys = {_value_key(value) for value in wanted}
        cells = table.values[where_column]
        keep = [k and not keys.isdisjoint(table.cell_keys(cell)) for k, cell in zip(keep, cells)]
    row_ids: list[int] = []
    texts: list[str] = []
    empty = 0
    for row, (kept, text) in enumerate(zip(keep, table.values[column])):
        if not kept:
            continue
        if text is None or (isinstance(text, str) and not text.strip()):
            empty += 1
            continue
        if not isinstance(text, str):
            raise _error(
                f"{name}: {table.row_name(row)}: column {column} holds {_show(text)}, not text — "
                "prompts are strings (pick another column with column:)"
            )
        _check_length(name, table.row_name(row), len(text))
        row_ids.append(row)
        texts.append(text)
    return _Rows(
        name=name,
        qualifiers=_where_text(source.where),
        column=column,
        total=count,
        row_ids=np.asarray(row_ids, dtype=np.int64),
        texts=lambda positions: [texts[int(i)] for i in positions],
        empty=empty,
        source_hash=source_hash,
    )


def _texty_cells(cells: Sequence[str | None]) -> bool:
    """Whether a CSV column holds text, as pandas would type it: not when every cell is a number,
    true/false, or empty."""
    filled = [cell for cell in cells if cell is not None and cell.strip()]
    return bool(filled) and not all(_NUMBER.match(cell) or cell.strip().lower() in ("true", "false") for cell in filled)


def _value_key(value: Any) -> _Key:
    """A where value or a JSON cell as a set member: true is not 1, "0" is not 0, 1 is 1.0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return ("text", value) if isinstance(value, str) else ("other", None)


def _json_keys(cell: Any) -> tuple[_Key, ...]:
    return (_value_key(cell),)


def _cell_keys(cell: str | None) -> tuple[_Key, ...]:
    """A CSV cell (always text) as what it can mean: its text, a number, true or false."""
    if cell is None:
        return ()
    keys: list[_Key] = [("text", cell)]
    word = cell.strip().lower()
    if word in ("true", "false"):
        keys.append(("bool", word == "true"))
    elif _NUMBER.match(cell):
        try:
            keys.append(("number", int(cell)))
        except ValueError:
            keys.append(("number", float(cell)))
    return tuple(keys)


def _check_length(name: str, row: str, length: int) -> None:
    if length > MAX_TEXT_CHARS:
        raise _error(f"{name}: {row}: {length:,} characters — a prompt may hold at most {MAX_TEXT_CHARS:,}")


def _text_column(columns: Sequence[str], texty: set[str] | Sequence[str], wanted: str | None, name: str) -> str:
    """`wanted`, else the column `text`, else the only text column; SpecError listing the columns."""
    if wanted is not None:
        if wanted not in columns:
            raise _error(f"{name}: column: no column {_show(wanted)} — the columns are {_listed(columns)}")
        return wanted
    if "text" in columns:
        return "text"
    candidates = [column for column in columns if column in texty]
    if len(candidates) == 1:
        return candidates[0]
    which = "no column holds text" if not candidates else f"{len(candidates)} columns hold text"
    raise _error(f"{name}: {which} and none is named text — set column: to one of {_listed(candidates or columns)}")


# --- Arrow: Parquet files and datasets ---------------------------------------------------------------------------


def _parquet_rows(data: bytes, name: str, source: PromptSource, source_hash: str) -> _Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        if parquet.metadata.num_rows > MAX_FILE_ROWS:
            raise _too_many_rows(name)
        schema = parquet.schema_arrow
        column = _text_column(schema.names, [f.name for f in schema if _is_text_type(f.type)], source.column, name)
        needed = list(dict.fromkeys([column, *(c for c, _ in source.where if c in schema.names)]))
        table = parquet.read(columns=needed)
    except (pa.ArrowException, OSError) as error:
        raise _error(f"{name}: cannot be read as Parquet: {error}") from None
    return _arrow_rows(table, schema.names, column, {}, name, source, (), source_hash)


def _read_datasets(source: PromptSource) -> _Rows:
    """A `save_to_disk` folder or a Hugging Face id from the local cache, one split of it."""
    text = source.source
    folder = Path(os.path.expanduser(text))
    if _exists(folder, directory=True):
        loaded = _from_disk(folder, text)
    elif _exists(folder) or folder.suffix.lower() in FILE_SUFFIXES:
        raise _error(
            f"{_show(text)} — a data file must be linked from inside the vault: put it there and write "
            f'"[[Data/{folder.name}]]"'
        )
    elif _is_builder_name(text):
        raise _error(
            f"{_show(text)} is one of datasets' file readers, not a data set — link a data file in the vault "
            '("[[Data/x.csv]]"), or give a save_to_disk folder or a Hugging Face id such as stanfordnlp/imdb'
        )
    elif not _HUB_ID.match(text) or ".." in text:
        raise _error(
            f'{_show(text)} — not a link, a folder or a Hugging Face data set id: give "[[Data/x.csv]]", '
            "a folder saved with datasets' save_to_disk, or an id such as stanfordnlp/imdb"
        )
    else:
        loaded = _from_hub_cache(text)
    dataset, split = _one_split(loaded, source.split, text)
    qualifiers = (f"split {split}",) if split is not None else ()
    import pyarrow as pa
    from datasets import ClassLabel

    columns = list(dataset.column_names)
    features = dataset.features
    text_types = [c for c in columns if _is_text_type(dataset.data.schema.field(c).type)]
    column = _text_column(columns, text_types, source.column, text)
    needed = list(dict.fromkeys([column, *(c for c, _ in source.where if c in columns)]))
    try:
        table = dataset.select_columns(needed).with_format("arrow")[:]
    except (pa.ArrowException, OSError) as error:
        raise _error(f"{text}: cannot read columns {_listed(needed)}: {error}") from None
    labels = {c: list(features[c].names) for c in needed if isinstance(features[c], ClassLabel)}
    fingerprint = getattr(dataset, "_fingerprint", None) or "unknown"
    return _arrow_rows(table, columns, column, labels, text, source, qualifiers, f"datasets-fingerprint:{fingerprint}")


def _arrow_rows(
    table: Any,
    columns: Sequence[str],
    column: str,
    labels: Mapping[str, Sequence[str]],
    name: str,
    source: PromptSource,
    qualifiers: tuple[str, ...],
    source_hash: str,
) -> _Rows:
    """The rows of an Arrow table, computed a column at a time (no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = table.column(column)
    if not _is_text_type(texts.type):
        first = pc.index(pc.is_valid(texts), True).as_py()
        row = f"row {first}: " if first >= 0 else ""
        raise _error(
            f"{name}: {row}column {column} holds {texts.type} values, not text — prompts are strings "
            "(pick another column with column:)"
        )
    keep = pa.chunked_array([pa.array(np.ones(len(table), dtype=bool))])
    for where_column, wanted in source.where:
        if where_column not in columns:
            raise _error(f"{name}: where: no column {_show(where_column)} — the columns are {_listed(columns)}")
        keep = pc.and_(keep, _arrow_is_in(table.column(where_column), where_column, wanted, labels, name))
    lengths = pc.fill_null(pc.utf8_length(texts), 0)
    # Empty, null or whitespace alone (as Unicode defines it): no prompt. No trimmed copy of the column is made.
    has_text = pc.fill_null(pc.and_(pc.greater(lengths, 0), pc.invert(pc.utf8_is_space(texts))), False)
    usable = pc.and_(keep, has_text)
    row_ids = np.flatnonzero(np.asarray(usable.to_numpy(zero_copy_only=False), dtype=bool)).astype(np.int64)
    empty = int(pc.sum(pc.and_(keep, pc.invert(has_text))).as_py() or 0)
    if len(row_ids):
        usable_lengths = np.asarray(lengths.to_numpy(zero_copy_only=False))[row_ids]
        longest = int(np.argmax(usable_lengths))
        _check_length(name, f"row {row_ids[longest]}", int(usable_lengths[longest]))
    return _Rows(
        name=name,
        qualifiers=(*qualifiers, *_where_text(source.where)),
        column=column,
        total=len(table),
        row_ids=row_ids,
        texts=lambda positions: [str(t) for t in texts.take(pa.array(row_ids[positions])).to_pylist()],
        empty=empty,
        source_hash=source_hash,
    )


def _arrow_is_in(
    values: Any, column: str, wanted: Sequence[Scalar], labels: Mapping[str, Sequence[str]], name: str
) -> Any:
    """Which rows of a typed column equal one of `wanted`; SpecError when a value cannot be of its type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if column in labels:  # a ClassLabel: its names stand for its numbers
        names = labels[column]
        unknown = [v for v in wanted if isinstance(v, str) and v not in names]
        if unknown:
            raise _error(f"{name}: where: {column} has the labels {_listed(names)}, not {_show(unknown[0])}")
        wanted = [names.index(v) if isinstance(v, str) else v for v in wanted]
    fits: Callable[[Scalar], bool]
    if _is_text_type(kind):
        expected, fits, target = "text (quote the value)", lambda v: isinstance(v, str), pa.large_string()
    elif pa.types.is_boolean(kind):
        expected, fits, target = "true or false", lambda v: isinstance(v, bool), pa.bool_()
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        expected, target = "numbers (write them without quotes)", pa.float64()
        fits = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    else:
        raise _error(f"{name}: where: column {column} holds {kind} values — where compares text, numbers or true/false")
    bad = [v for v in wanted if not fits(v)]
    if bad:
        raise _error(f"{name}: where: column {column} holds {expected}, not {_show(bad[0])}")
    value_set = pa.array([float(v) if target == pa.float64() else v for v in wanted], type=target)
    values = pc.cast(values, target, safe=False)  # a 64-bit id compares as near as a float can
    return pc.is_in(values, value_set=value_set)


def _is_text_type(kind: Any) -> bool:
    import pyarrow as pa

    checks = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
    return any(check is not None and check(kind) for check in checks)


def _from_disk(folder: Path, name: str) -> Any:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`, memory-mapped."""
    one = (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    if not (one or (folder / "dataset_dict.json").is_file()):
        raise _error(
            f"{name}: a folder, but not one saved with datasets' save_to_disk (no dataset_dict.json or "
            "state.json) — save the data set with save_to_disk, or link a data file in the vault"
        )
    import datasets

    try:
        return datasets.load_from_disk(str(folder))
    except Exception as error:  # datasets raises many kinds; each is the user's folder, not our bug
        raise _error(f"{name}: cannot be read as a datasets folder: {_first_line(error)}") from None


def _from_hub_cache(repo_id: str) -> Any:
    """The data set `repo_id` from the local caches only: the datasets cache (what `load_dataset(id)`
    left), else the hub cache (what `hf download --repo-type dataset id` left)."""
    import datasets

    with _hub_offline():
        try:
            # No split: every split, memory-mapped; one is picked after, with the splits listed if need be.
            # trust_remote_code=False: datasets 3 would otherwise offer to run a data set's script (4+ never do).
            return datasets.load_dataset(repo_id, trust_remote_code=False)
        except OSError as error:  # ConnectionError when not cached; FileNotFoundError, DatasetNotFoundError
            reason = _first_line(error)
        except Exception as error:  # a cached set that will not load (several configs…): say why
            raise _error(
                f"{repo_id}: cannot be loaded from the local Hugging Face cache: {_first_line(error)}"
            ) from None
        snapshot = _hub_snapshot(repo_id)
        if snapshot is None:
            raise _error(
                f"{repo_id} is not in the local Hugging Face cache (or needs the network): {reason} — download it "
                f"where there is network (`datasets.load_dataset({repo_id!r})` once, or `hf download --repo-type "
                f"dataset {repo_id}`), or save it with save_to_disk and give that folder as source"
            )
        try:
            return datasets.load_dataset(snapshot, trust_remote_code=False)
        except Exception as error:
            raise _error(
                f"{repo_id}: the downloaded copy at {snapshot} cannot be loaded: {_first_line(error)}"
            ) from None


def _hub_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # not downloaded (LocalEntryNotFoundError), or a cache we cannot read: not there
        return None


@contextmanager
def _hub_offline() -> Iterator[None]:
    """datasets and huggingface_hub read HF_HUB_OFFLINE / HF_DATASETS_OFFLINE once, when imported, so
    setting the variables now would change nothing, and setting them for good would leak into the
    process (a model download elsewhere). Their module flags are set for this call and put back after;
    with them, every Hub request raises at once (no retries to wait out: unpatched, a missing id with no
    network takes ~25 s), and datasets falls back to its cache. Another thread that reaches the Hub during
    the call sees offline mode too: it fails fast rather than hanging. The lock keeps two loaders from
    restoring each other's values."""
    import datasets.config as datasets_config
    from datasets.utils import logging as datasets_logging
    from huggingface_hub import constants as hub_constants

    with _OFFLINE_LOCK:
        saved = (datasets_config.HF_HUB_OFFLINE, datasets_config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
        verbosity = datasets_logging.get_verbosity()
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
        datasets_logging.set_verbosity_error()  # not "using the cached version since … offline": we asked for it
        try:
            yield
        finally:
            datasets_config.HF_HUB_OFFLINE, datasets_config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
            datasets_logging.set_verbosity(verbosity)


def _one_split(loaded: Any, split: str | None, name: str) -> tuple[Any, str | None]:
    """The split asked for; the only one when there is one and none was asked for."""
    if hasattr(loaded, "keys"):  # a DatasetDict
        splits = list(loaded.keys())
        if split is None:
            if len(splits) == 1:
                return loaded[splits[0]], splits[0]
            raise _error(f"{name} has the splits {_listed(splits)} — choose one with split:")
        if split not in splits:
            raise _error(f"{name}: no split {_show(split)} — the splits are {_listed(splits)}")
        return loaded[split], split
    own = None if loaded.split is None else str(loaded.split)
    if split is not None and split != own:
        held = f"only the split {own}" if own else "one data set without splits"
        raise _error(f"{name}: no split {_show(split)} — the folder holds {held}; leave split out")
    return loaded, own


def _is_builder_name(text: str) -> bool:
    """datasets' own builders (csv, json, text…) would read files from the working directory."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return text.lower() in _PACKAGED_DATASETS_MODULES


def _exists(path: Path, *, directory: bool = False) -> bool:
    try:
        return path.is_dir() if directory else os.path.lexists(path)
    except (OSError, ValueError):  # a name too long for the file system is no folder of ours
        return False


# --- checking what a note asked for -----------------------------------------------------------------------------


def _where(value: Any) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
    if not isinstance(value, Mapping):
        raise _error(f"where: {_show(value)} — expected a mapping of column to value or list of values, {{label: 0}}")
    if len(value) > MAX_WHERE_COLUMNS:
        raise _error(f"where: {len(value)} columns — at most {MAX_WHERE_COLUMNS}")
    where = []
    for column, wanted in value.items():
        name = _string(column, "where", what="a column name")
        values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if not values:
            raise _error(f"where: {name}: an empty list — give a value or a list of values")
        if len(values) > MAX_WHERE_VALUES:
            raise _error(f"where: {name}: {len(values):,} values — at most {MAX_WHERE_VALUES:,}")
        where.append((name, tuple(_scalar(item, name) for item in values)))
    return tuple(where)


def _scalar(value: Any, column: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) >= _MAX_INT:
            raise _error(f"where: {column}: {value} — numbers must fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(f"where: {column}: {value} — a finite number")
        return float(value)
    if isinstance(value, str):
        return _string(value, f"where: {column}", what="a value", empty_ok=True)
    raise _error(f"where: {column}: {_show(value)} — a value is text, a number or true/false")


def _string(value: Any, key: str, *, what: str = "a string", empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _error(f"{key}: {_show(value)} — expected {what}")
    if not empty_ok and not value.strip():
        raise _error(f"{key}: empty — expected {what}")
    if len(value) > MAX_SPEC_STRING_CHARS:
        raise _error(f"{key}: {len(value):,} characters — at most {MAX_SPEC_STRING_CHARS:,}")
    if "\x00" in value:
        raise _error(f"{key}: {_show(value)} holds a NUL character")
    return value


def _whole(value: Any, key: str, minimum: int, maximum: int) -> int:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or not minimum <= value <= maximum:
        hint = " (it is quoted: write it without quotes)" if isinstance(value, str) and value.strip().isdigit() else ""
        raise _error(f"{key}: {_show(value)} is not a whole number from {minimum:,} to {maximum:,}{hint}")
    return int(value)


# --- small helpers ----------------------------------------------------------------------------------------------


def _looks_like_link(value: str) -> bool:
    text = value.strip()
    return text.startswith("[[") and text.endswith("]]")


def _link_target(link: str) -> str:
    """`Data/x.csv` for `[[Data/x.csv|alias]]`: how messages and descriptions name a linked file."""
    return re.split(r"[|#^]", link.strip()[2:-2], maxsplit=1)[0].strip()


def _error(message: str) -> SpecError:
    return SpecError(message, key=_KEY)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _json(value: Scalar) -> str:
    return json.dumps(value, ensure_ascii=False)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(map(_show, names[:20]))
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
