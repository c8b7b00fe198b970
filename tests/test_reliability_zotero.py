"""Zotero as a hostile or broken service, and what it may cost a finished run (issue 10, Zotero
classes). Every test here runs the real code against a real HTTP server on 127.0.0.1 or real
export files; each failed on the code before its fix: the run was lost, memory grew with what
the server sent, a citekey went to another host, or a corrupt export was reported as fine.

1. A computed run is never dropped for a later step: artifacts and the result note are written
   before any literature lookup, and whatever a lookup raises becomes a warning in the note;
   every failure inside a Zotero source is a ZoteroError naming the source and the citekey.
2. Nothing Zotero sends is unbounded: bodies are capped after decompression, redirects never
   leave the configured host, a reset connection is not "Zotero is not running", and Better
   BibTeX exports are parsed once per version, within a deadline, malformed entries reported.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from datetime import datetime
from itertools import repeat
from pathlib import Path

import pytest
from zotero_server import Raw, serve_zotero

from actadd_notes.doctor import checks
from actadd_notes.errors import ZoteroError
from actadd_notes.publish import Publisher, Run
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.literature import ensure_literature_notes
from actadd_notes.vault.templates import TemplateRenderer
from actadd_notes.zotero import BetterBibTexSource, LocalApiSource, ZoteroSource

pytestmark = pytest.mark.timeout(120)

CITEKEY = "hostile2024"
DATA = Path(__file__).parent / "data"
STARTED = datetime(2025, 3, 4, 10, 30, 15)
NESTED = b"[" * 100_000 + b"]" * 100_000  # deeper than any JSON parser recurses
JSON = {"Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def gzip_bomb(mebibytes: int) -> bytes:
    """A valid gzip member inflating to `mebibytes` MiB of zeros, about 1 KB per MiB: one
    deflate block of a MiB, made independent of its neighbours by a full flush, repeated."""
    mib = bytes(2**20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(mib, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * mebibytes + deflate.flush() + struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)


def test_the_gzip_bomb_is_what_it_claims():
    import gzip

    assert gzip.decompress(gzip_bomb(3)) == bytes(3 * 2**20)
    assert len(gzip_bomb(2100)) < 2_300_000  # 2 MB on the wire, 2.05 GiB inflated


# --- 1. a computed run survives whatever Zotero does ----------------------------------------------


@pytest.fixture(scope="module")
def computed():
    """A real ExperimentResult from the tiny model (under a second), citing one paper."""
    from tiny import tiny_lm

    from actadd_notes.experiments.pipeline import run_experiment
    from actadd_notes.experiments.spec import parse_spec

    spec, _ = parse_spec(
        {
            "prompt_add": "Love",
            "prompt_sub": "Hate",
            "layer": 0,
            "coeff": 1,
            "prompts": ["I hate you because"],
            "samples": 1,
            "max_new_tokens": 2,
            "metrics": ["kl"],
            "literature": [f"[[@{CITEKEY}]]"],
        }
    )
    return run_experiment(spec, tiny_lm("llama"))


@pytest.fixture
def vault(tmp_path) -> Path:
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    (root / "Experiments").mkdir()
    (root / "Experiments" / "love.md").write_text("---\ntype: actadd-experiment\n---\n")
    return root


def publish_with(vault: Path, result, sources: list[ZoteroSource]):
    """Publish as the job runner does: a missing literature note is looked up in `sources`."""
    config = VaultConfig.load(vault)
    renderer = TemplateRenderer()

    def ensure(citekey: str) -> None:
        outcome = ensure_literature_notes(config, renderer, [citekey], sources)[citekey]
        if isinstance(outcome, Exception):
            raise outcome

    publisher = Publisher(config, renderer, ensure_literature=ensure)
    return publisher.publish(Run(vault / "Experiments" / "love.md", "20250304-103015-abcd", STARTED), result)


def bbt_export(tmp_path: Path, text: str, name: str = "library.json") -> BetterBibTexSource:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return BetterBibTexSource(path)


MISBEHAVIOURS = {
    "redirect loop": (Raw(301, {"Location": "/api/users/0/items/top"}), "redirect"),
    "corrupt gzip": (Raw(200, {**JSON, "Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip at all"), "decompress"),
    "JSON nested 100,000 deep": (Raw(200, JSON, NESTED), "nested too deeply"),
}


@pytest.mark.parametrize("misbehaviour", [*MISBEHAVIOURS, "BBT date 1e999"])
def test_a_computed_run_is_published_whatever_zotero_answers(vault, tmp_path, computed, misbehaviour):
    if misbehaviour == "BBT date 1e999":
        export = f'[{{"citation-key": "{CITEKEY}", "title": "T", "issued": {{"date-parts": [[2024, 1e999]]}}}}]'
        published = publish_with(vault, computed, [bbt_export(tmp_path, export)])
        message = "date"
    else:
        raw, message = MISBEHAVIOURS[misbehaviour]
        with serve_zotero(prefix="/api", raw=raw) as server:
            published = publish_with(vault, computed, [LocalApiSource(base_url=server.url)])

    assert published.result_note.is_file()
    folder = vault / "Results" / "artifacts" / "love 20250304-103015-abcd"
    assert json.loads((folder / "results.json").read_text())  # the generations are kept
    (warning,) = [w for w in published.warnings if w.startswith(f"literature {CITEKEY}")]
    assert message in warning and "internal error" not in warning
    assert f"⚠ literature {CITEKEY}" in published.result_note.read_text()  # shown in the note itself
    assert not (vault / "Literature" / f"@{CITEKEY}.md").exists()


def test_the_result_is_written_before_any_lookup_and_any_exception_after_it_is_a_warning(vault, computed):
    config = VaultConfig.load(vault)
    seen: list[bool] = []

    def ensure(citekey: str) -> None:  # a lookup that hits a bug of any kind, after noting what exists
        seen.append(any((vault / "Results").glob("love *.md")))
        raise OverflowError("int too large to convert")

    publisher = Publisher(config, TemplateRenderer(), ensure_literature=ensure)
    published = publisher.publish(Run(vault / "Experiments" / "love.md", "20250304-103015-abcd", STARTED), computed)

    assert seen == [True]  # the result note existed when the lookup began
    assert published.warnings == (f"literature {CITEKEY}: OverflowError: int too large to convert",)
    assert "OverflowError" in published.result_note.read_text()


# --- every failure in a source is a ZoteroError for the citekey ---------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        *MISBEHAVIOURS.values(),
        (Raw(200, {"Content-Type": "application/zip"}, b"PK\x03\x04"), "not JSON"),
        (Raw(reset=True), "connection"),
    ],
    ids=[*MISBEHAVIOURS, "a zip instead of JSON", "connection reset"],
)
def test_every_failure_of_the_api_is_a_zotero_error_naming_source_and_citekey(raw, message):
    with serve_zotero(prefix="/api", raw=raw) as server:
        with pytest.raises(ZoteroError) as caught:
            LocalApiSource(base_url=server.url, deadline_s=30).find(CITEKEY)

    assert (caught.value.source, caught.value.item) == ("local", CITEKEY)
    assert message in str(caught.value)
    assert "not running" not in str(caught.value)  # it answered: something else is wrong


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'[{{"citation-key": "{CITEKEY}", "issued": {{"date-parts": [[1e999]]}}}}]', "date"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"items": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
    ids=["date 1e999", "nested list", "nested items"],
)
def test_every_failure_of_a_bbt_export_is_a_zotero_error_naming_source_and_citekey(tmp_path, text, message):
    with pytest.raises(ZoteroError) as caught:
        bbt_export(tmp_path, text).find(CITEKEY)

    assert (caught.value.source, caught.value.item) == ("bbt:library.json", CITEKEY)
    assert message in str(caught.value)


# --- 2. bounded inputs ----------------------------------------------------------------------------

_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # the unfixed code must not take the machine
from actadd_notes.errors import ZoteroError
from actadd_notes.zotero import LocalApiSource
started = time.monotonic()
try:
    LocalApiSource(base_url=sys.argv[1], deadline_s=120).find("bomb2024")
    error = None
except ZoteroError as failure:
    error = str(failure)
except MemoryError:
    error = "MemoryError"
seconds = time.monotonic() - started
# the peak RSS of this process image: ru_maxrss would carry the forking parent's over the exec
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print(json.dumps({"error": error, "seconds": seconds, "rss": int(status["VmHWM"].split()[0])}))
"""


@pytest.mark.parametrize(
    "raw",
    [
        Raw(200, {**JSON, "Content-Encoding": "gzip"}, gzip_bomb(2100)),
        Raw(200, {**JSON, "Content-Length": str(3 * 2**30)}, lambda: repeat(b" " * 2**16, 3 * 2**14)),
    ],
    ids=["gzip bomb 2 MB to 2 GiB", "3 GiB body"],
)
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
def test_a_body_past_the_cap_fails_the_lookup_quickly_and_memory_stays_small(raw):
    """In a child process, so its peak RSS is the lookup's alone (Linux: /proc/self/status)."""
    with serve_zotero(prefix="/api", raw=raw) as server:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, server.url], capture_output=True, text=True, timeout=100, env=os.environ
        )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    assert outcome["error"] is not None and "larger than 32 MiB" in outcome["error"], outcome
    assert outcome["error"].startswith("local bomb2024: ")
    assert outcome["seconds"] < 60  # a few hundred ms on an idle machine
    assert outcome["rss"] < 400 * 1024, outcome  # KiB: imports and a 32 MiB body (about 120 MiB), far under 1 GB


def test_a_redirect_to_another_host_is_never_followed():
    with serve_zotero(prefix="/api") as elsewhere:
        moved = Raw(301, {"Location": f"{elsewhere.url}/users/0/items/top?q={CITEKEY}"})
        with serve_zotero(prefix="/api", raw=moved) as server:
            with pytest.raises(ZoteroError) as caught:
                LocalApiSource(base_url=server.url).find(CITEKEY)

    assert elsewhere.requests == []  # the citekey never left for the other host
    assert len(server.requests) == 1
    assert (caught.value.source, caught.value.item) == ("local", CITEKEY)
    assert f"redirected to {elsewhere.url.removesuffix('/api')}" in str(caught.value)
    assert "not followed" in str(caught.value)


def test_a_redirect_on_the_same_host_is_followed():
    with serve_zotero(prefix="/api", moved="/old") as server:
        moved = server.url.replace("/api", "/old/api")
        item = LocalApiSource(base_url=moved).find("turnerActivationAdditionSteering2024")

    assert item.key == "T7NBJ2KQ"
    paths = [path for path, _ in server.requests]
    assert paths[:2] == ["/old/api/users/0/items/top", "/api/users/0/items/top"]


def test_a_connection_reset_is_not_reported_as_zotero_not_running():
    with serve_zotero(prefix="/api", raw=Raw(reset=True)) as server:
        with pytest.raises(ZoteroError) as caught:
            LocalApiSource(base_url=server.url).find(CITEKEY)

    message = str(caught.value)
    assert "not running" not in message and "Allow other applications" not in message
    assert f"the connection to {server.url} broke off" in message


BIB = """@article{{{key},
  title = {{A {{Title}} with {word}}},
  author = {{Doe, Jane and Roe, Richard}},
  date = {{2023-01-02}}
}}
"""


def bib_entries(count: int, word: str = "Word") -> str:
    return "\n".join(BIB.format(key=f"paper{i:05d}", word=word) for i in range(count))


def test_a_bib_export_is_parsed_once_per_version_for_every_source_and_lookup(tmp_path):
    path = tmp_path / "library.bib"
    path.write_text(bib_entries(300), encoding="utf-8")
    stat = path.stat()
    assert BetterBibTexSource(path).find("paper00007").title == "A Title with Word"

    # the same size and mtime, other content: a parse would see "Wxrd"; the cached parse does not
    path.write_text(bib_entries(300, word="Wxrd"), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for _ in range(20):  # fresh sources, as every job builds them, and citekeys no entry has
        source = BetterBibTexSource(path)
        with pytest.raises(ZoteroError, match="not in"):
            source.find("missing2099")
        assert source.find("paper00299").title == "A Title with Word"

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new version: parsed again
    assert BetterBibTexSource(path).find("paper00007").title == "A Title with Wxrd"


class SteppingClock:
    """A clock that moves one second each time it is read, so a parse runs out of time at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_bib_export_parse_stops_at_its_deadline(tmp_path):
    path = tmp_path / "slow.bib"
    path.write_text(bib_entries(200), encoding="utf-8")

    with pytest.raises(ZoteroError) as caught:
        BetterBibTexSource(path, clock=SteppingClock(), deadline_s=10).find("paper00150")

    assert (caught.value.source, caught.value.item) == ("bbt:slow.bib", "paper00150")
    assert "not parsed within 10 s" in str(caught.value)


MALFORMED_BIB = """@article{good1,
  title = {Good},
  date = {2020}
}

@article{bad1,
  title = {An unclosed brace,
  date = {2020}
}

@article{good2,
  title = {Good two},
  date = {2021}
}
"""


def test_a_malformed_bib_entry_is_reported_not_dropped(tmp_path):
    source = bbt_export(tmp_path, MALFORMED_BIB, "library.bib")

    assert source.find("good1").title == "Good" and source.find("good2").title == "Good two"
    with pytest.raises(ZoteroError) as caught:
        source.find("bad1")
    assert (caught.value.source, caught.value.item) == ("bbt:library.bib", "bad1")
    assert "malformed" in str(caught.value)
    with pytest.raises(ZoteroError, match=r"not in .*1 malformed entry .*bad1"):
        source.find("other2099")


TRICKY_BIB = r"""% a line outside any entry
@comment{jabref-meta: databaseType:biblatex;}
@Comment a comment without braces
@string{ acl = "Association for " # {Computational} # " Linguistics" }
@STRING(short = {S})
@preamble{ "\newcommand{\noop}[1]{}" }
@InProceedings{macro2020,
  Title = "A {Quoted} Title with {"}quotes{"}",
  booktitle = acl # { Proceedings},
  month = jan,
  year = 2020,
  title = {A repeated field: bibtexparser keeps the first},
  abstract = {Line one
      line two},
  editor = "Doe, J. and {Barnes and Noble}",
}
@article(paren2021, title = {Parens}, journal = short, date = {2021-02})
@misc{a1, title={x}} @misc{a2, title={on the same line}}
@article{empty2022, title = {{}}, year = {2022}}
   @book{indented2019,
  title = {Indented {\'E}tude},
  author = {M{\"u}ller, Hans and van der Berg, Jan},
}
"""


def test_the_bib_reader_reads_every_entry_as_bibtexparser_does(tmp_path):
    """bibtexparser 1.x (pyzotero's reader, and this one's before) is the reference: the same
    items from macros, quotes, parentheses, repeated fields and entries sharing a line."""
    from bibtexparser.bparser import BibTexParser

    from actadd_notes.zotero.bbt import _item_from_bibtex

    reference = BibTexParser(common_strings=True, ignore_nonstandard_types=False).parse(TRICKY_BIB).entries
    contents = bbt_export(tmp_path, TRICKY_BIB, "library.bib").contents()

    assert contents.malformed == {}
    assert contents.items == {entry["ID"]: _item_from_bibtex(entry) for entry in reference}
    assert len(contents.items) == 6
    assert contents.items["macro2020"].publication == "Association for Computational Linguistics Proceedings"


@pytest.mark.parametrize(
    ("name", "text", "detail"),
    [
        ("library.bib", MALFORMED_BIB, "bad1"),
        ("library.json", '[{"citation-key": "a", "title": "x"}, {"citation-key": "b", "issued": ', "not valid JSON"),
        ("library.json", '[{"citation-key": "a", "issued": {"date-parts": [[1e999]]}}]', "date"),
    ],
    ids=["bib with a malformed entry", "truncated JSON", "an impossible date"],
)
def test_doctor_does_not_say_ok_for_a_corrupt_bbt_export(vault, name, text, detail):
    (vault / "zotero").mkdir()
    (vault / "zotero" / name).write_text(text, encoding="utf-8")
    (vault / "actadd-notes.yaml").write_text(f"zotero_sources: [bbt]\nbbt_exports: [zotero/{name}]\n")

    (check,) = [c for c in checks(vault) if c.name == f"zotero bbt:{name}"]

    assert not check.ok
    assert detail in check.detail


def test_doctor_says_ok_for_a_sound_bbt_export(vault):
    (vault / "zotero").mkdir()
    (vault / "zotero" / "library.bib").write_text((DATA / "bbt-library.bib").read_text(encoding="utf-8"))
    (vault / "actadd-notes.yaml").write_text("zotero_sources: [bbt]\nbbt_exports: [zotero/library.bib]\n")

    (check,) = [c for c in checks(vault) if c.name == "zotero bbt:library.bib"]

    assert check.ok and check.detail == str(vault / "zotero" / "library.bib")
