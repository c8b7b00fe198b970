"""Zotero sources against a real local HTTP server shaped like the Zotero API (through
pyzotero and httpx), Better BibTeX export files, and the configured order of sources."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from zotero_server import load_library, serve_zotero

from actadd_notes.errors import VaultError, ZoteroError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.zotero import (
    Annotation,
    Attachment,
    BetterBibTexSource,
    Creator,
    LocalApiSource,
    SkippedSource,
    WebApiSource,
    WebCredentials,
    ZoteroItem,
    citekey_of,
    find_item,
    sources_from_config,
    web_credentials,
)

DATA = Path(__file__).parent / "data"
EXAMPLE_LIBRARY = Path(__file__).parent.parent / "vault_example" / "zotero" / "library.json"
TURNER = "turnerActivationAdditionSteering2024"
KONEN = "konenStyleVectorsSteering2024"
TURNER_AUTHORS = (
    "Turner, Alexander Matt",
    "Thiergart, Lisa",
    "Leech, Gavin",
    "Udell, David",
    "Vazquez, Juan J.",
    "Mini, Ulisse",
    "MacDiarmid, Monte",
)
TURNER_ABSTRACT_START = "Reliably controlling the behavior of large language models is a pressing open problem."
pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """Records sleeps instead of sleeping, and moves time on by them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    """The web source trusts proxy settings; the test server is on loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def local():
    with serve_zotero(prefix="/api") as server:
        yield server


def _paths(server) -> list[str]:
    return [path for path, _ in server.requests]


# ---------------------------------------------------------------------------- local API


def test_local_api_finds_item_by_native_citation_key_with_annotations_in_reading_order(local):
    item = LocalApiSource(base_url=local.url).find(TURNER)

    assert item.key == "T7NBJ2KQ" and item.citekey == TURNER
    assert item.title == "Activation addition: steering language models without optimization"
    assert item.item_type == "preprint" and item.year == "2024" and item.date == "2024-06-04"
    assert tuple(c.last_first for c in item.authors) == TURNER_AUTHORS
    assert item.abstract.startswith(TURNER_ABSTRACT_START)
    assert item.tags[:2] == ("Computer Science - Computation and Language", "Computer Science - Machine Learning")
    assert item.doi == "10.48550/arXiv.2308.10248" and item.publication == "arXiv"
    assert item.zotero_library == "library"
    assert item.notes == ("<p>Comment: 20 pages, code at tinyurl.com/actadd</p>",)
    assert [(a.key, a.content_type) for a in item.attachments] == [
        ("UWUCEGH9", "application/pdf"),
        ("9QK4X2MB", "text/html"),
    ]
    # the server lists them in reverse; Zotero's sort index puts them back in reading order
    assert [a.page_label for a in item.annotations] == ["", "4", "4", "4", "4", "4", "8", "9", "26"]
    first = item.annotations[0]
    assert first == Annotation(
        key="A1B2C3D4",
        type="highlight",
        text="our Activation Addition (ActAdd) method instead computes them by taking activation "
        "differences resulting from pairs of prompts",
        color="#ffd400",
        attachment_key="UWUCEGH9",
        date_added=datetime(2024, 9, 30, 7, 51, 10, tzinfo=UTC),
        date_modified=datetime(2024, 9, 30, 7, 51, 10, tzinfo=UTC),
    )
    assert {a.color for a in item.annotations} == {"#ffd400", "#ff6666", "#2ea8e5"}
    # one quick search, then the item's children and the PDF's; the HTML snapshot is skipped
    assert _paths(local) == [
        "/api/users/0/items/top",
        "/api/users/0/items/T7NBJ2KQ/children",
        "/api/users/0/items/UWUCEGH9/children",
    ]
    assert local.requests[0][1] | {"q": TURNER, "qmode": "everything"} == local.requests[0][1]


def test_local_api_finds_citekey_kept_in_extra(local):
    item = LocalApiSource(base_url=local.url).find(KONEN)

    assert item.key == "K8M4QW2S" and item.citekey == KONEN
    assert item.authors[2] == Creator(last="Diallo", first="Diaoulé")
    (annotation,) = item.annotations
    assert annotation.comment == "compare with ActAdd's choice of layer\nsee [[@turnerActivationAdditionSteering2024]]"
    assert (annotation.color, annotation.page_label, annotation.attachment_key) == ("#5fb236", "5", "P4R7T2V9")
    assert annotation.date_modified == datetime(2024, 10, 1, 12, 29, tzinfo=UTC)


def test_quick_search_matches_are_filtered_exactly(local):
    """A quick search for Turner's key also returns an item that mentions it; only the exact
    citekey counts, so a citekey that is only mentioned is not found."""
    with pytest.raises(ZoteroError) as caught:
        LocalApiSource(base_url=local.url).find("turnerActivationAddition")
    assert caught.value.source == "local" and caught.value.item == "turnerActivationAddition"
    assert "no item has this citekey" in str(caught.value)


def test_falls_back_to_scanning_every_page_when_quick_search_misses():
    with serve_zotero(prefix="/api", search_misses=True, max_limit=2) as server:
        item = LocalApiSource(base_url=server.url).find(KONEN)

    assert item.key == "K8M4QW2S"
    scan = [query["start"] for path, query in server.requests if path.endswith("/items/top") and "q" not in query]
    assert scan == ["0", "2"]  # stopped at the page holding it (top items: filler, Turner, Konen)


def test_unknown_citekey_names_citekey_and_source_after_a_full_scan(local):
    with pytest.raises(ZoteroError) as caught:
        LocalApiSource(base_url=local.url).find("nobody2099")

    assert str(caught.value) == "local nobody2099: no item has this citekey"
    assert _paths(local) == ["/api/users/0/items/top", "/api/users/0/items/top"]


def test_zotero_not_running_says_how_to_enable_the_local_api():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there

    with pytest.raises(ZoteroError) as caught:
        LocalApiSource(base_url=f"http://127.0.0.1:{port}/api").find(TURNER)

    message = str(caught.value)
    assert message.startswith(f"local {TURNER}: Zotero is not running")
    assert "start Zotero 7" in message
    assert "Allow other applications on this computer to communicate with Zotero" in message
    assert "Settings → Advanced" in message


def test_local_api_403_says_how_to_enable_it():
    with serve_zotero(prefix="/api", forbidden="Local API is not enabled") as server:
        with pytest.raises(ZoteroError) as caught:
            LocalApiSource(base_url=server.url).find(TURNER)

    assert "refused the local API" in str(caught.value)
    assert "Allow other applications on this computer to communicate with Zotero" in str(caught.value)


def test_retry_after_on_429_is_waited_out_on_the_injected_clock():
    clock = FakeClock()
    with serve_zotero(prefix="/api", rate_limited=1, retry_after="2") as server:
        item = LocalApiSource(base_url=server.url, clock=clock).find(TURNER)

    assert item.key == "T7NBJ2KQ"
    assert clock.slept == [2.0]
    assert _paths(server)[:2] == ["/api/users/0/items/top", "/api/users/0/items/top"]


def test_429_without_retry_after_backs_off_exponentially():
    clock = FakeClock()
    with serve_zotero(prefix="/api", rate_limited=2, retry_after=None) as server:
        LocalApiSource(base_url=server.url, clock=clock).find(TURNER)

    assert clock.slept == [2.0, 4.0]


def test_rate_limit_retries_are_bounded():
    clock = FakeClock()
    with serve_zotero(prefix="/api", rate_limited=99, retry_after="3") as server:
        with pytest.raises(ZoteroError) as caught:
            LocalApiSource(base_url=server.url, clock=clock, attempts=3).find(TURNER)

    assert str(caught.value) == f"local {TURNER}: still rate-limited after 3 attempts; try again later"
    assert clock.slept == [3.0, 3.0]
    assert len(server.requests) == 3


def test_backoff_header_delays_the_next_request():
    clock = FakeClock()
    with serve_zotero(prefix="/api", backoff="5") as server:
        item = LocalApiSource(base_url=server.url, clock=clock).find(TURNER)

    assert item.key == "T7NBJ2KQ"
    assert clock.slept == [5.0]
    assert len(server.requests) == 3


def test_a_wait_longer_than_allowed_fails_at_once():
    clock = FakeClock()
    with serve_zotero(prefix="/api", rate_limited=1, retry_after="3600") as server:
        with pytest.raises(ZoteroError, match="asks to wait 3600 s"):
            LocalApiSource(base_url=server.url, clock=clock, max_wait_s=60).find(TURNER)

    assert clock.slept == []


# ---------------------------------------------------------------------------- web API


def test_web_api_sends_the_key_and_finds_items():
    with serve_zotero(library_id="123456", api_key="s3cret") as server:
        source = WebApiSource(library_id="123456", api_key="s3cret", base_url=server.url)
        item = source.find(KONEN)

    assert item.key == "K8M4QW2S" and len(item.annotations) == 1
    assert _paths(server)[0] == "/users/123456/items/top"


def test_web_api_group_libraries_link_to_the_group():
    with serve_zotero(library_type="group", library_id="4242") as server:
        item = WebApiSource(library_id="4242", api_key=None, library_type="group", base_url=server.url).find(TURNER)

    assert item.library_type == "group" and item.zotero_library == "groups/4242"
    assert _paths(server)[0] == "/groups/4242/items/top"


def test_web_api_wrong_key_points_at_the_key():
    with serve_zotero(library_id="123456", api_key="s3cret") as server:
        with pytest.raises(ZoteroError) as caught:
            WebApiSource(library_id="123456", api_key="wrong", base_url=server.url).find(TURNER)

    assert str(caught.value) == (
        f"web {TURNER}: the Zotero web API refused access to user library 123456: check ZOTERO_API_KEY"
    )


def test_web_api_unknown_library_points_at_the_library_settings():
    with serve_zotero(library_id="123456") as server:
        with pytest.raises(ZoteroError, match="check ZOTERO_LIBRARY_ID and ZOTERO_LIBRARY_TYPE"):
            WebApiSource(library_id="999", api_key="k", base_url=server.url).find(TURNER)


def test_web_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ZOTERO_LIBRARY_ID", "123456")
    monkeypatch.setenv("ZOTERO_API_KEY", "s3cret")

    assert web_credentials() == WebCredentials(library_id="123456", api_key="s3cret", library_type="user")


def test_web_credentials_fall_back_to_the_user_config_file(monkeypatch, tmp_path):
    config = tmp_path / "xdg-config" / "actadd-notes" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[zotero]\nlibrary_id = 4242\napi_key = "from-file"\nlibrary_type = "group"\n')
    monkeypatch.setenv("ZOTERO_API_KEY", "from-env")  # the environment wins, field by field

    assert web_credentials() == WebCredentials(library_id="4242", api_key="from-env", library_type="group")


def test_web_credentials_missing_say_where_to_put_them(tmp_path):
    with pytest.raises(ZoteroError) as caught:
        web_credentials()

    message = str(caught.value)
    assert "ZOTERO_LIBRARY_ID" in message and "ZOTERO_API_KEY" in message
    assert str(tmp_path / "xdg-config" / "actadd-notes" / "config.toml") in message


def test_web_credentials_reject_an_unknown_library_type(monkeypatch):
    monkeypatch.setenv("ZOTERO_LIBRARY_ID", "1")
    monkeypatch.setenv("ZOTERO_LIBRARY_TYPE", "team")

    with pytest.raises(ZoteroError, match="'team' is not 'user' or 'group'"):
        web_credentials()


# ---------------------------------------------------------------------------- Better BibTeX


@pytest.mark.parametrize("export", ["bbt-library.csl.json", "bbt-library.json", "bbt-library.bib"])
def test_bbt_exports_hold_both_papers(export):
    source = BetterBibTexSource(DATA / export)
    turner, konen = source.find(TURNER), source.find(KONEN)
    abstracts = {item["key"]: item.get("abstractNote") for item in load_library()}

    assert source.name == f"bbt:{export}"
    assert turner.citekey == TURNER and konen.citekey == KONEN
    assert turner.item_type == konen.item_type == "preprint"
    assert tuple(c.last_first for c in turner.authors) == TURNER_AUTHORS
    assert [c.last_first for c in konen.authors][2:4] == ["Diallo, Diaoulé", "Schütt, Peer"]
    assert (turner.year, turner.date, konen.year) == ("2024", "2024-06-04", "2024")
    assert turner.abstract == abstracts["T7NBJ2KQ"] and konen.abstract == abstracts["K8M4QW2S"]
    assert turner.tags[:2] == ("Computer Science - Computation and Language", "Computer Science - Machine Learning")
    assert turner.doi == "10.48550/arXiv.2308.10248" and turner.url == "http://arxiv.org/abs/2308.10248"
    assert turner.annotations == ()  # no export format carries annotations


def test_csl_json_keeps_the_title_as_zotero_has_it():
    item = BetterBibTexSource(DATA / "bbt-library.csl.json").find(TURNER)

    assert item.title == "Activation addition: steering language models without optimization"
    assert item.key == ""  # CSL has no Zotero item key


def test_betterbibtex_json_carries_keys_notes_and_attachments():
    source = BetterBibTexSource(DATA / "bbt-library.json")
    turner, konen = source.find(TURNER), source.find(KONEN)

    assert turner.key == "T7NBJ2KQ"
    assert turner.title == "Activation addition: steering language models without optimization"
    assert turner.notes == ("<p>Comment: 20 pages, code at tinyurl.com/actadd</p>",)  # {"note": …} objects
    assert konen.notes == ("<p>Found via the ActAdd paper.</p>",)  # plain strings (older BBT)
    assert turner.attachments[0] == Attachment(
        key="UWUCEGH9",
        title="Preprint PDF",
        content_type="application/pdf",
        path="/home/reader/Zotero/storage/UWUCEGH9/Turner et al. - 2024 - Activation addition steering "
        "language models without optimization.pdf",
    )
    assert konen.key == "K8M4QW2S"  # its citekey only in `extra`, as BBT pins keys on Zotero 6
    with pytest.raises(ZoteroError):
        source.find("")  # the standalone note has no citekey and is not indexed under ""


def test_bibtex_decodes_latex_and_keeps_braced_institutions_whole():
    source = BetterBibTexSource(DATA / "bbt-library.bib")
    turner, report = source.find(TURNER), source.find("fixtureInstitutionReport2023")

    assert turner.title == "Activation Addition: Steering Language Models Without Optimization"
    assert turner.publication == "arXiv"
    assert report.item_type == "report"
    assert report.creators == (
        Creator(last="Barnes and Noble Research", creator_type="author"),
        Creator(last="van der Berg", first="Jan", creator_type="editor"),
    )
    assert report.authors == report.creators[:1]


def test_bbt_export_is_reread_when_the_auto_export_rewrites_it(tmp_path):
    export = tmp_path / "library.json"
    entries = json.loads((DATA / "bbt-library.csl.json").read_text(encoding="utf-8"))
    export.write_text(json.dumps(entries[:1]), encoding="utf-8")
    source = BetterBibTexSource(export)
    assert source.find(TURNER).citekey == TURNER
    with pytest.raises(ZoteroError, match="not in"):
        source.find(KONEN)

    export.write_text(json.dumps(entries), encoding="utf-8")  # a different size: a new version

    assert source.find(KONEN).title == "Style Vectors for Steering Generative Large Language Models"


def test_missing_bbt_export_names_the_file(tmp_path):
    source = BetterBibTexSource(tmp_path / "library.json")

    with pytest.raises(ZoteroError) as caught:
        source.find(TURNER)

    assert caught.value.source == "bbt:library.json"
    assert f"cannot read the export {tmp_path / 'library.json'}" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"references": []}', "neither Better CSL JSON"),
        (b'[{"title": "Caf\xe9"}]', "not UTF-8"),
    ],
)
def test_unreadable_bbt_export_says_why(tmp_path, content, message):
    export = tmp_path / "library.json"
    export.write_bytes(content)

    with pytest.raises(ZoteroError, match=message):
        BetterBibTexSource(export).find(TURNER)


def test_example_vault_finds_both_papers_offline():
    sources = sources_from_config(VaultConfig.load(EXAMPLE_LIBRARY.parent.parent))

    assert [s.name for s in sources] == ["bbt:library.json"]
    assert find_item(TURNER, sources).title == "Activation addition: steering language models without optimization"
    assert find_item(KONEN, sources).title == "Style Vectors for Steering Generative Large Language Models"


# ---------------------------------------------------------------------------- citekeys, order


def test_native_citation_key_wins_over_extra():
    assert citekey_of({"citationKey": "native", "extra": "Citation Key: pinned"}) == "native"
    assert citekey_of({"citationKey": "", "extra": "arXiv: 1\nCitation Key: pinned2024\ntex.x: y"}) == "pinned2024"
    assert citekey_of({"extra": "citation key:  pinned2024 "}) == "pinned2024"
    assert citekey_of({"extra": "Original Citation Key: old"}) == ""
    assert citekey_of({"title": "no key"}) == ""


class StubSource:
    """A source that knows a fixed set of items, or always fails."""

    def __init__(self, name: str, *items: ZoteroItem, error: str = "") -> None:
        self.name = name
        self.items = {i.citekey: i for i in items}
        self.error = error
        self.asked: list[str] = []

    def find(self, citekey: str) -> ZoteroItem:
        self.asked.append(citekey)
        if self.error or citekey not in self.items:
            raise ZoteroError(self.error or "no item has this citekey", source=self.name, item=citekey)
        return self.items[citekey]


def test_find_item_takes_the_first_source_that_has_it():
    down = StubSource("local", error="Zotero is not running")
    web = StubSource("web", ZoteroItem(citekey=TURNER, title="from web"))
    bbt = StubSource("bbt:library.json", ZoteroItem(citekey=TURNER, title="from bbt"))

    assert find_item(TURNER, [down, web, bbt]).title == "from web"
    assert (down.asked, web.asked, bbt.asked) == ([TURNER], [TURNER], [])


def test_find_item_lists_why_every_source_failed():
    sources = [
        StubSource("local", error="Zotero is not running"),
        SkippedSource("web", "no credentials"),
        StubSource("bbt:x.json"),
    ]

    with pytest.raises(ZoteroError) as caught:
        find_item("nobody2099", sources)

    assert caught.value.item == "nobody2099"
    assert str(caught.value) == (
        "nobody2099: no Zotero source has it:\n"
        "  - local nobody2099: Zotero is not running\n"
        "  - web nobody2099: skipped: no credentials\n"
        "  - bbt:x.json nobody2099: no item has this citekey"
    )


def test_find_item_without_sources_says_so():
    with pytest.raises(ZoteroError, match="no Zotero source is configured"):
        find_item(TURNER, [])


def test_sources_follow_the_configured_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOTERO_LIBRARY_ID", "123456")
    monkeypatch.setenv("ZOTERO_API_KEY", "s3cret")
    config = VaultConfig(root=tmp_path, zotero_sources=["bbt", "web", "local"], bbt_exports=["zotero/a.json", "b.bib"])

    sources = sources_from_config(config)

    assert [type(s) for s in sources] == [BetterBibTexSource, BetterBibTexSource, WebApiSource, LocalApiSource]
    assert [s.name for s in sources] == ["bbt:a.json", "bbt:b.bib", "web", "local"]
    assert sources[0].path == tmp_path / "zotero" / "a.json"


def test_unusable_sources_are_skipped_with_a_reason(tmp_path):
    config = VaultConfig(root=tmp_path, zotero_sources=["local", "web", "bbt"], bbt_exports=[])

    local, web, bbt = sources_from_config(config)

    assert isinstance(local, LocalApiSource)
    assert isinstance(web, SkippedSource) and "ZOTERO_LIBRARY_ID" in web.reason
    assert isinstance(bbt, SkippedSource) and "bbt_exports" in bbt.reason


def test_bbt_exports_must_lie_in_the_vault(tmp_path):
    config = VaultConfig(root=tmp_path, zotero_sources=["bbt"], bbt_exports=["../library.json"])

    with pytest.raises(VaultError, match="outside the vault"):
        sources_from_config(config)


def test_unknown_source_name_is_refused(tmp_path):
    with pytest.raises(ZoteroError, match="unknown source 'mendeley'"):
        sources_from_config(VaultConfig(root=tmp_path, zotero_sources=["mendeley"]))
