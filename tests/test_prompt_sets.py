"""Prompt sets: a spec's `prompts:` read from a data file in the vault, a datasets `save_to_disk`
folder or a Hugging Face id in the local cache. Real files in a tmp vault, real datasets folders
and caches (built here, pointed at tmp dirs), no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vaults import vault

from actadd_notes.errors import SpecError, VaultError
from actadd_notes.experiments.prompt_sets import (
    FILE_SUFFIXES,
    MAX_FILE_BYTES,
    MAX_FILE_ROWS,
    MAX_SAMPLE,
    MAX_TEXT_CHARS,
    MAX_WHERE_COLUMNS,
    MAX_WHERE_VALUES,
    PromptSource,
    is_prompt_source,
    load_prompt_set,
    parse_prompt_source,
)
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.data_files import DATA_SUFFIXES, resolve_data_file

PROMPTS = ["I hate you because", "The movie was", "  ", "Tell me about", "My day was"]
LABELS = [0, 1, 0, 0, 1]


@pytest.fixture
def config(vault) -> VaultConfig:
    (vault / "Data").mkdir()
    return VaultConfig.load(vault)


@pytest.fixture
def resolve(config):
    return lambda link: resolve_data_file(config, link)


def load(value, resolve=None):
    return load_prompt_set(parse_prompt_source(value), resolve)


def fails(value, resolve, *messages: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load(value, resolve)
    assert caught.value.key == "prompts"
    for message in messages:
        assert message in str(caught.value), str(caught.value)
    return caught.value


def write_format(folder: Path, suffix: str, texts=PROMPTS, labels=LABELS) -> Path:
    """The same rows (`text`, `label`) in each format; a .txt file holds the texts alone."""
    path = folder / f"prompts{suffix}"
    if suffix in (".csv", ".tsv"):
        delimiter = "," if suffix == ".csv" else "\t"
        lines = [f"text{delimiter}label"] + [f'"{t}"{delimiter}{label}' for t, label in zip(texts, labels)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in zip(texts, labels)))
    elif suffix == ".parquet":
        pq.write_table(pa.table({"text": texts, "label": labels}), path)
    else:
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


# --- every source loads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_every_file_format_loads_its_non_empty_rows_in_order(config, resolve, suffix):
    path = write_format(config.root / "Data", suffix)
    loaded = load(f"[[Data/prompts{suffix}]]", resolve)
    assert loaded.texts == ("I hate you because", "The movie was", "Tell me about", "My day was")
    assert loaded.row_ids == (0, 1, 3, 4)
    assert loaded.empty_rows == 1 and loaded.rows_available == 4
    assert loaded.source_hash == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.description == f"Data/prompts{suffix}, column text: 4 of 4 rows, 1 empty skipped"
    json.dumps(loaded.to_record())  # results.json takes it as is


def test_a_link_by_name_or_alias_finds_the_file_anywhere_in_the_vault(config, resolve):
    write_format(config.root / "Data", ".csv")
    by_name = load("[[prompts.csv|my prompts]]", resolve)
    assert by_name.texts == load("[[Data/prompts.csv]]", resolve).texts
    assert by_name.description.startswith("prompts.csv, column text")


@pytest.fixture(scope="module")
def saved_sets(tmp_path_factory):
    """A Dataset and a DatasetDict (train and test) written with save_to_disk; `label` is a ClassLabel."""
    folder = tmp_path_factory.mktemp("saved")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    texts = [f"review {i}" if i % 7 else "" for i in range(60)]
    train = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(60)]}, features=features)
    test = datasets.Dataset.from_dict({"text": ["a test", "another"], "label": [0, 1]}, features=features)
    train.save_to_disk(str(folder / "one"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder / "both"))
    return folder, texts


def test_a_save_to_disk_dataset_loads(saved_sets):
    folder, texts = saved_sets
    loaded = load({"source": str(folder / "one")})
    assert loaded.row_ids == tuple(i for i in range(60) if i % 7) and loaded.empty_rows == 9
    assert loaded.texts == tuple(texts[i] for i in loaded.row_ids)
    fingerprint = datasets.load_from_disk(str(folder / "one"))._fingerprint
    assert loaded.source_hash == f"datasets-fingerprint:{fingerprint}"


def test_a_save_to_disk_dataset_dict_loads_the_split_asked_for(saved_sets):
    folder, _ = saved_sets
    loaded = load({"source": str(folder / "both"), "split": "test"})
    assert loaded.texts == ("a test", "another")
    assert loaded.description == f"{folder / 'both'} (split test), column text: 2 of 2 rows"
    fails({"source": str(folder / "both")}, None, "has the splits 'train', 'test'", "split:")
    fails({"source": str(folder / "both"), "split": "validation"}, None, "no split 'validation'", "'train', 'test'")


def test_where_on_a_datasets_label_takes_its_name_or_number(saved_sets):
    folder, texts = saved_sets
    by_name = load({"source": str(folder / "both"), "split": "train", "where": {"label": "pos"}})
    by_number = load({"source": str(folder / "both"), "split": "train", "where": {"label": 1}})
    assert by_name.texts == by_number.texts and by_name.row_ids == tuple(i for i in range(1, 60, 2) if i % 7)
    assert by_name.texts == tuple(texts[i] for i in by_name.row_ids)
    assert 'where label="pos"' in by_name.description
    fails({"source": str(folder / "one"), "where": {"label": "meh"}}, None, "labels 'neg', 'pos'", "'meh'")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """The datasets and hub caches in tmp dirs (both are read from these module settings at call time)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path


def parquet_repo(folder: Path) -> Path:
    """A Hub data set repository's files: data/{train,test}-00000-of-00001.parquet."""
    (folder / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0]}), folder / "data" / "train-00000-of-00001.parquet"
    )
    pq.write_table(pa.table({"text": ["x", "y"], "label": [0, 1]}), folder / "data" / "test-00000-of-00001.parquet")
    return folder


def test_a_hub_id_loads_from_the_datasets_cache_offline(hf_cache):
    # What `load_dataset("me/tiny")` leaves in the datasets cache when it runs online once: the prepared
    # Arrow files under me___tiny/default/0.0.0/<hash>/, named after the data set.
    repo = parquet_repo(hf_cache / "repo" / "tiny")
    prepared = datasets.load_dataset(str(repo))
    built = Path(prepared["train"].cache_files[0]["filename"]).parent
    cached = Path(datasets.config.HF_DATASETS_CACHE) / "me___tiny" / "default" / "0.0.0" / "0123456789abcdef"
    cached.mkdir(parents=True)
    for file in built.iterdir():  # tiny-train.arrow, tiny-test.arrow, dataset_info.json
        shutil.copy(file, cached / file.name)
    offline = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    loaded = load({"source": "me/tiny", "split": "train", "where": {"label": 0}})
    assert loaded.texts == ("a", "c") and loaded.row_ids == (0, 2)
    assert loaded.source_hash.startswith("datasets-fingerprint:")
    assert loaded.description == "me/tiny (split train, where label=0), column text: 2 of 2 rows"
    assert offline == (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)  # put back
    fails({"source": "me/tiny"}, None, "has the splits", "split:")


def test_a_hub_id_loads_from_a_hub_download_offline(hf_cache):
    # What `hf download --repo-type dataset me/tiny` leaves: a snapshot of the repository in the hub cache.
    commit = "a" * 40
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "datasets--me--tiny"
    parquet_repo(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load({"source": "me/tiny", "split": "test"})
    assert loaded.texts == ("x", "y")


def test_a_hub_id_not_in_the_cache_fails_fast_and_says_what_to_do(hf_cache):
    offline = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    start = time.monotonic()
    error = fails(
        {"source": "nobody/nothing-here", "split": "train"},
        None,
        "nobody/nothing-here is not in the local Hugging Face cache",
        "hf download --repo-type dataset nobody/nothing-here",
        "save_to_disk",
    )
    assert time.monotonic() - start < 5, error
    assert offline == (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)


# --- which column ---------------------------------------------------------------------------------------------


def test_the_text_column_is_text_else_the_only_text_column_else_the_one_named(config, resolve):
    data = config.root / "Data"
    (data / "named.csv").write_text("title,text,label\nT1,first,0\nT2,second,1\n")
    assert load("[[Data/named.csv]]", resolve).texts == ("first", "second")
    (data / "only.jsonl").write_text('{"id": 1, "review": "good", "stars": 4.5}\n{"id": 2, "review": "bad"}\n')
    only = load("[[Data/only.jsonl]]", resolve)
    assert only.texts == ("good", "bad") and "column review" in only.description
    (data / "only.csv").write_text("id,review,stars,ok\n1,good,4.5,true\n2,bad,1e1,False\n")
    assert load("[[Data/only.csv]]", resolve).texts == ("good", "bad")
    assert load({"source": "[[Data/named.csv]]", "column": "title"}, resolve).texts == ("T1", "T2")


def test_a_missing_or_ambiguous_column_lists_the_columns(config, resolve):
    (config.root / "Data" / "two.csv").write_text("title,body\nT,B\n")
    fails("[[Data/two.csv]]", resolve, "2 columns hold text", "set column: to one of 'title', 'body'")
    fails({"source": "[[Data/two.csv]]", "column": "text"}, resolve, "no column 'text'", "'title', 'body'")
    (config.root / "Data" / "numbers.jsonl").write_text('{"a": 1}\n')
    fails("[[Data/numbers.jsonl]]", resolve, "no column holds text", "column:")


def test_a_number_in_the_text_column_is_an_error_naming_its_row(config, resolve):
    (config.root / "Data" / "mixed.jsonl").write_text('{"text": "fine"}\n\n{"text": 42}\n')
    fails("[[Data/mixed.jsonl]]", resolve, "line 3", "42", "not text")
    pq.write_table(pa.table({"text": ["a"], "n": [3]}), config.root / "Data" / "typed.parquet")
    fails({"source": "[[Data/typed.parquet]]", "column": "n"}, resolve, "row 0", "int64", "not text")


# --- where ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_where_keeps_rows_equal_to_a_value_or_one_of_a_list(config, resolve, suffix):
    write_format(config.root / "Data", suffix)
    link = f"[[Data/prompts{suffix}]]"
    one = load({"source": link, "where": {"label": 0}}, resolve)
    assert one.row_ids == (0, 3) and one.empty_rows == 1 and one.rows_available == 2
    assert "(where label=0)" in one.description
    both = load({"source": link, "where": {"label": [0, 1]}}, resolve)
    assert both.row_ids == (0, 1, 3, 4) and "(where label in (0, 1))" in both.description
    fails({"source": link, "where": {"stars": 5}}, resolve, "where: no column 'stars'", "'text', 'label'")
    fails({"source": link, "where": {"label": 7}}, resolve, "no prompts in 5 rows", "after where")


def test_where_compares_typed_values_by_type(config, resolve):
    (config.root / "Data" / "flags.jsonl").write_text(
        '{"text": "a", "ok": true}\n{"text": "b", "ok": 1}\n{"text": "c", "ok": "1"}\n{"text": "d", "ok": 1.0}\n'
    )
    assert load({"source": "[[Data/flags.jsonl]]", "where": {"ok": True}}, resolve).texts == ("a",)
    assert load({"source": "[[Data/flags.jsonl]]", "where": {"ok": 1}}, resolve).texts == ("b", "d")
    assert load({"source": "[[Data/flags.jsonl]]", "where": {"ok": "1"}}, resolve).texts == ("c",)
    write_format(config.root / "Data", ".parquet")
    fails({"source": "[[Data/prompts.parquet]]", "where": {"label": "0"}}, resolve, "holds numbers", "'0'")


# --- sizes and errors -----------------------------------------------------------------------------------------


def test_n_larger_than_the_rows_names_both_numbers(config, resolve):
    write_format(config.root / "Data", ".txt")
    fails({"source": "[[Data/prompts.txt]]", "n": 9}, resolve, "n is 9 but only 4 rows are available")


def test_an_empty_file_has_no_prompts(config, resolve):
    (config.root / "Data" / "blank.txt").write_text("\n  \n\n")
    fails("[[Data/blank.txt]]", resolve, "no prompts in 3 rows (3 empty)")
    (config.root / "Data" / "nothing.csv").write_text("")
    fails("[[Data/nothing.csv]]", resolve, "empty", "header row")


def test_a_file_that_is_not_utf8_is_an_error_naming_the_offset(config, resolve):
    (config.root / "Data" / "latin.csv").write_bytes("text\ncafé\n".encode("latin-1"))
    fails("[[Data/latin.csv]]", resolve, "Data/latin.csv: not UTF-8", "0xe9 at offset 8", "line 2", "save the file")
    (config.root / "Data" / "bom.csv").write_bytes(b"\xef\xbb\xbftext\ncaf\xc3\xa9\n")
    assert load("[[Data/bom.csv]]", resolve).texts == ("café",)


def test_a_million_rows_is_an_error_that_says_the_limits(config, resolve):
    (config.root / "Data" / "huge.txt").write_bytes(b"x\n" * 1_000_000)
    start = time.monotonic()
    fails("[[Data/huge.txt]]", resolve, f"more than {MAX_FILE_ROWS:,} rows", "256 MiB", "save_to_disk", "no row limit")
    assert time.monotonic() - start < 5


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(config, resolve):
    with open(config.root / "Data" / "big.csv", "wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    fails("[[Data/big.csv]]", resolve, "256 MiB", "save_to_disk")


def test_a_too_long_text_or_a_malformed_row_is_an_error_naming_it(config, resolve):
    (config.root / "Data" / "long.txt").write_text("short\n" + "x" * (MAX_TEXT_CHARS + 1) + "\n")
    fails("[[Data/long.txt]]", resolve, "line 2", f"at most {MAX_TEXT_CHARS:,}")
    (config.root / "Data" / "cells.csv").write_text("text,label\nfine,0\nnot, quoted,1\n")
    fails("[[Data/cells.csv]]", resolve, "line 3: 3 cells under a header of 2")
    (config.root / "Data" / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    fails("[[Data/bad.jsonl]]", resolve, "line 2: not valid JSON")
    (config.root / "Data" / "list.jsonl").write_text('["a"]\n')
    fails("[[Data/list.jsonl]]", resolve, "line 1: list", "JSON object")
    (config.root / "Data" / "fake.parquet").write_text("not parquet")
    fails("[[Data/fake.parquet]]", resolve, "cannot be read as Parquet")


def test_links_out_of_the_vault_are_refused(config, resolve, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("text\nsecret\n")
    fails("[[../outside.csv]]", resolve, "leads outside the vault")
    (config.root / "Data" / "escape.csv").symlink_to(outside)
    fails("[[Data/escape.csv]]", resolve, "leads outside the vault")
    fails("[[escape.csv]]", resolve, "leads outside the vault")
    (config.root / "Data" / "inside.csv").symlink_to(config.root / "Data" / "real.csv")
    (config.root / "Data" / "real.csv").write_text("text\nfine\n")
    assert load("[[Data/inside.csv]]", resolve).texts == ("fine",)


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking(config, resolve):
    os.mkfifo(config.root / "Data" / "pipe.csv")
    fails("[[Data/pipe.csv]]", resolve, "pipe.csv is not a regular file")
    fails("[[pipe.csv]]", resolve, "pipe.csv is not a regular file")


def test_what_the_resolver_refuses(config, resolve):
    (config.root / "Data" / "notes.md").write_text("# hi\n")
    fails("[[Data/notes.md]]", resolve, "is not a data file", ".csv, .tsv, .jsonl, .parquet, .txt")
    fails("[[Data/missing.csv]]", resolve, "no file Data/missing.csv in the vault")
    fails("[[missing.csv]]", resolve, "no file named missing.csv in the vault")
    (config.root / "A").mkdir()
    (config.root / "A" / "dup.csv").write_text("text\na\n")
    (config.root / "Data" / "dup.csv").write_text("text\nb\n")
    fails("[[dup.csv]]", resolve, "several files are named dup.csv (A/dup.csv, Data/dup.csv)", "link with its folder")
    (config.root / ".hidden").mkdir()
    (config.root / ".hidden" / "secret.csv").write_text("text\nx\n")
    (config.root / ".obsidian" / "conf.csv").write_text("text\nx\n")
    fails("[[secret.csv]]", resolve, "no file named secret.csv")
    fails("[[conf.csv]]", resolve, "no file named conf.csv")
    fails("[[.obsidian/conf.csv]]", resolve, "Obsidian's config folder")
    fails("[[" + "x" * 300 + ".csv]]", resolve, "over 255 bytes")
    with pytest.raises(VaultError, match="NUL"):
        resolve_data_file(config, "[[Data/a\x00.csv]]")
    (config.root / "Data" / "folder.csv").mkdir()
    fails("[[Data/folder.csv]]", resolve, "is a folder")


def test_a_file_path_or_an_unknown_string_is_not_a_source(config, tmp_path):
    write_format(config.root / "Data", ".csv")
    bare = str(config.root / "Data" / "prompts.csv")
    fails({"source": bare}, None, "must be linked from inside the vault", '"[[Data/prompts.csv]]"')
    fails({"source": "Data/prompts.csv"}, None, "must be linked from inside the vault")
    fails({"source": "csv"}, None, "one of datasets' file readers")
    fails({"source": "no such thing!"}, None, "not a link, a folder or a Hugging Face data set id")
    (tmp_path / "plain").mkdir()
    fails({"source": str(tmp_path / "plain")}, None, "not one saved with datasets' save_to_disk")
    fails("[[Data/prompts.csv]]", None, "needs a vault", "actadd-notes")


def test_a_file_has_no_split(config, resolve):
    write_format(config.root / "Data", ".csv")
    fails({"source": "[[Data/prompts.csv]]", "split": "train"}, resolve, "a file has no splits")


# --- what a note may write --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"source": "[[a.csv]]", "sample": 3}, "unknown key 'sample'"),
        ({"source": "[[a.csv]]", "colum": "x"}, "did you mean column?"),
        ({"split": "train"}, "source: missing"),
        ({"source": 5}, "source: 5 — expected a string"),
        ({"source": "  "}, "source: empty"),
        ({"source": "x" * 1001}, "at most 1,000"),
        ({"source": "[[a.csv]]", "n": 0}, "n: 0 is not a whole number from 1"),
        ({"source": "[[a.csv]]", "n": 1.5}, "n: 1.5 is not a whole number"),
        ({"source": "[[a.csv]]", "n": "5"}, "it is quoted"),
        ({"source": "[[a.csv]]", "n": True}, "n: true is not a whole number"),
        ({"source": "[[a.csv]]", "n": MAX_SAMPLE + 1}, f"to {MAX_SAMPLE:,}"),
        ({"source": "[[a.csv]]", "seed": -1}, "seed: -1 is not a whole number from 0"),
        ({"source": "[[a.csv]]", "seed": "0"}, "seed: '0'"),
        ({"source": "[[a.csv]]", "where": ["label"]}, "expected a mapping of column to value"),
        ({"source": "[[a.csv]]", "where": {"label": []}}, "an empty list"),
        ({"source": "[[a.csv]]", "where": {"label": {"x": 1}}}, "a value is text, a number or true/false"),
        ({"source": "[[a.csv]]", "where": {"label": float("nan")}}, "a finite number"),
        ({"source": "[[a.csv]]", "where": {1: 0}}, "expected a column name"),
        ({"source": "[[a.csv]]", "where": {f"c{i}": 0 for i in range(MAX_WHERE_COLUMNS + 1)}}, "at most 16"),
        ({"source": "[[a.csv]]", "where": {"label": list(range(MAX_WHERE_VALUES + 1))}}, "at most 1,000"),
        ("Data/a.csv", "give a link to a data file"),
        (42, "expected a list of prompts"),
    ],
)
def test_a_bad_source_is_a_spec_error_naming_the_key(value, message):
    with pytest.raises(SpecError, match="^prompts: ") as caught:
        parse_prompt_source(value)
    assert caught.value.key == "prompts" and message in str(caught.value), str(caught.value)


def test_a_source_round_trips_through_its_dict():
    sources = [
        parse_prompt_source("[[Data/x.csv]]"),
        parse_prompt_source(
            {
                "source": "stanfordnlp/imdb",
                "split": "test",
                "column": "text",
                "where": {"label": 0, "lang": ["en", "fr"]},
                "n": 200,
                "seed": 3,
            }
        ),
        parse_prompt_source({"source": "[[x.csv|alias]]", "where": {"ok": [True, 1.5]}, "n": None, "split": None}),
    ]
    for source in sources:
        assert parse_prompt_source(json.loads(json.dumps(source.to_dict()))) == source
    assert sources[1].where == (("label", (0,)), ("lang", ("en", "fr")))
    assert sources[0].is_link and not sources[1].is_link and sources[2].is_link


def test_what_counts_as_a_source():
    assert is_prompt_source("[[Data/x.csv]]") and is_prompt_source({"source": "imdb"})
    assert not is_prompt_source("I hate you because") and not is_prompt_source(["[[Data/x.csv]]"])
    assert not is_prompt_source(None)


def test_the_vault_and_the_loader_agree_on_the_data_files():
    assert DATA_SUFFIXES == FILE_SUFFIXES


# --- draws ----------------------------------------------------------------------------------------------------


@pytest.fixture
def numbered(config):
    """50 rows `prompt <row>`, every 5th empty, label row % 3."""
    lines = ["text,label"] + [f"{'' if i % 5 == 4 else f'prompt {i}'},{i % 3}" for i in range(50)]
    path = config.root / "Data" / "numbered.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_draw_is_reproducible_seeded_sorted_and_points_at_its_rows(numbered, resolve):
    spec = {"source": "[[Data/numbered.csv]]", "where": {"label": [0, 1]}, "n": 10, "seed": 7}
    first, again = load(spec, resolve), load(spec, resolve)
    assert first == again and first.row_ids == again.row_ids and first.texts == again.texts
    assert list(first.row_ids) == sorted(first.row_ids) and len(set(first.row_ids)) == 10
    assert all(text == f"prompt {row}" for text, row in zip(first.texts, first.row_ids))
    assert all(row % 3 in (0, 1) and row % 5 != 4 for row in first.row_ids)
    available = [i for i in range(50) if i % 3 in (0, 1) and i % 5 != 4]
    expected = np.sort(np.random.default_rng(7).choice(available, size=10, replace=False))
    assert first.row_ids == tuple(int(i) for i in expected)
    assert first.rows_available == len(available) and first.empty_rows == 7
    assert first.description == (
        f"Data/numbered.csv (where label in (0, 1)), column text: 10 drawn (seed 7) of {len(available)} rows, "
        "7 empty skipped"
    )
    other = load({**spec, "seed": 8}, resolve)
    assert other.row_ids != first.row_ids


def test_a_draw_from_a_datasets_folder_is_reproducible_and_points_at_its_rows(saved_sets):
    folder, texts = saved_sets
    spec = {"source": str(folder / "both"), "split": "train", "n": 12, "seed": 1}
    first, again = load(spec), load(spec)
    assert first.row_ids == again.row_ids and first.texts == tuple(texts[i] for i in first.row_ids)
    assert list(first.row_ids) == sorted(first.row_ids)
    assert load({**spec, "seed": 2}).row_ids != first.row_ids


def test_the_hash_follows_the_bytes(numbered, resolve):
    before = load("[[Data/numbered.csv]]", resolve)
    numbered.write_text(numbered.read_text().replace("prompt 1,", "prompt one,"))
    after = load("[[Data/numbered.csv]]", resolve)
    assert before.source_hash != after.source_hash and after.texts[1] == "prompt one"


def test_a_record_holds_what_a_result_needs(numbered, resolve):
    loaded = load({"source": "[[Data/numbered.csv]]", "n": 3, "seed": 0}, resolve)
    record = json.loads(json.dumps(loaded.to_record()))
    assert record == {
        "source": loaded.source.to_dict(),
        "row_ids": list(loaded.row_ids),
        "source_hash": loaded.source_hash,
        "description": loaded.description,
        "rows_available": 40,
        "empty_rows": 10,
    }
    assert parse_prompt_source(record["source"]) == loaded.source == PromptSource("[[Data/numbered.csv]]", n=3)


def test_empty_means_empty_null_or_unicode_whitespace_in_every_reader(config, resolve):
    texts = ["one", "\u3000", None, "", " two "]
    pq.write_table(pa.table({"text": texts}), config.root / "Data" / "gaps.parquet")
    (config.root / "Data" / "gaps.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for link in ("[[Data/gaps.parquet]]", "[[Data/gaps.jsonl]]"):
        loaded = load(link, resolve)
        assert loaded.texts == ("one", " two ") and loaded.row_ids == (0, 4) and loaded.empty_rows == 3


def test_importing_the_loader_imports_neither_datasets_nor_pyarrow():
    code = (
        "import sys, actadd_notes.experiments.prompt_sets\n"
        "print(sorted({'datasets', 'pyarrow', 'huggingface_hub'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
