"""The Zotero local and web API through pyzotero, made safe to wait on.

A lookup (`find`) has an overall deadline: every socket read and write gets at most the time
left, so a server that trickles one byte at a time cannot hold a run. Listings are paged by
`start` and `Total-Results` with a page cap, and a server that ignores `start` (the same page
again) is stopped at once. Rate limits (`Backoff`, `Retry-After`) are waited out on an
injected clock, within the deadline.

What a server may send is bounded below pyzotero, in the transport every request goes
through (`_GuardedTransport`): a body is read streamed and decompressed here, and the lookup
fails once it passes `MAX_BODY_BYTES` (so a gzip bomb or an endless body costs at most that
much memory); a request or redirect to any origin but the configured one is refused (the
citekey is in the query string and must not leave for another host); a successful answer must
be JSON (pyzotero would otherwise unpack a zip or parse a feed). Anything the server sends that
is not the JSON Zotero sends, and any failure of the HTTP stack, is a ZoteroError for that
citekey that says what happened: a refused connection is "Zotero is not running", a reset one
is not.
"""

from __future__ import annotations

import logging
import os
import re
import time
import tomllib
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, Unpack

import httpcore2
import httpx2

from actadd_notes.errors import ZoteroError
from actadd_notes.zotero.items import ZoteroItem, annotation_from, attachment_from, citekey_of, item_from_zotero

if TYPE_CHECKING:
    from pyzotero import Zotero

__all__ = [
    "LOCAL_API_URL",
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "WEB_API_URL",
    "Clock",
    "Limits",
    "LocalApiSource",
    "SystemClock",
    "WebApiSource",
    "WebCredentials",
    "user_config_path",
    "web_credentials",
]

LOCAL_API_URL = "http://127.0.0.1:23119/api"
WEB_API_URL = "https://api.zotero.org"
_PAGE_SIZE = 100  # the most the Zotero API returns per request
# A page of 100 items with long abstracts is a few hundred KB; a body past this, after
# decompression, is no Zotero answer, and reading stops there.
MAX_BODY_BYTES = 32 * 2**20
MAX_REDIRECTS = 5  # on the configured origin only; Zotero itself does not redirect API reads
_INFLATE_STEP = 2**16  # the most one step of decompression may produce
_log = logging.getLogger(__name__)
_ENABLE_LOCAL_API = (
    "start Zotero 7 and enable “Allow other applications on this computer to communicate "
    "with Zotero” in Settings → Advanced"
)


class Clock(Protocol):
    """Time for waiting out rate limits and keeping the deadline; tests pass a fake so they never sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _RateLimited(Exception):
    """Raised inside the transport; the source turns it into a ZoteroError naming the item."""


class _OutOfTime(Exception):
    """The lookup's deadline passed; the source turns it into a ZoteroError naming the item."""


class _Refused(Exception):
    """An answer or request a lookup does not accept (another host, too large, not JSON, a
    corrupt body); its message is complete, and the source turns it into a ZoteroError."""


class _Deadline:
    """The time left to one lookup, on the source's clock."""

    def __init__(self, clock: Clock, seconds: float):
        self.clock = clock
        self.seconds = seconds
        self._ends: float | None = None

    def start(self) -> None:
        self._ends = self.clock.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left; _OutOfTime once none are."""
        left = float("inf") if self._ends is None else self._ends - self.clock.monotonic()
        if left <= 0:
            raise _OutOfTime(f"no complete answer within {self.seconds:g} s; try again later")
        return left

    def cap(self, timeout: float | None) -> float:
        left = self.left()
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A connection whose every read and write waits at most the time the lookup has left."""

    def __init__(self, inner: httpcore2.NetworkStream, deadline: _Deadline):
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.cap(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._deadline.cap(timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore's network backend, with `_DeadlineStream` connections."""

    def __init__(self, inner: httpcore2.NetworkBackend, deadline: _Deadline):
        self._inner = inner
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._deadline.cap(timeout), local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_unix_socket(path, self._deadline.cap(timeout), socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _deadline_transport(deadline: _Deadline, *, trust_env: bool) -> httpx2.HTTPTransport:
    """httpx's transport (TLS as configured; a transport given to a client bypasses the environment's
    proxy settings, so the web source connects directly) over `_DeadlineBackend`. httpx takes no
    network backend, so the one its connection pool made is wrapped in place."""
    transport = httpx2.HTTPTransport(trust_env=trust_env)
    pool = transport._pool
    pool._network_backend = _DeadlineBackend(pool._network_backend, deadline)
    return transport


def _origin(url: httpx2.URL) -> str:
    """`scheme://host:port`, with the scheme's default port spelled out, so two spellings of
    one origin compare equal."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}"


class _GuardedTransport(httpx2.BaseTransport):
    """Every request and answer of a source passes here, below pyzotero and httpx's redirects:
    requests go to the configured origin only, a redirect elsewhere is refused before it is
    followed, a successful answer must say it is JSON, and bodies are decompressed here, never
    past `max_body_bytes` (httpx would inflate a whole gzip bomb into memory)."""

    def __init__(self, inner: httpx2.BaseTransport, *, base_url: str, max_body_bytes: int):
        self._inner = inner
        self._origin = _origin(httpx2.URL(base_url))
        self._shown = base_url.rstrip("/")
        self._max_body_bytes = max_body_bytes

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if _origin(request.url) != self._origin:
            raise _Refused(f"refused to contact {_origin(request.url)}: a lookup sends citekeys only to {self._shown}")
        request.headers["Accept-Encoding"] = "gzip, deflate"  # what `_Inflate` reads; nothing else is accepted
        response = self._inner.handle_request(request)
        try:
            self._check(request, response)
            decoder = _decoder(response.headers.get("Content-Encoding", ""), self._shown)
        except BaseException:
            response.close()
            raise
        for name in ("Content-Encoding", "Content-Length"):  # the body is decoded below: httpx must not again
            response.headers.pop(name, None)
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = _CappedStream(response.stream, decoder, self._max_body_bytes, self._shown)
        return response

    def close(self) -> None:
        self._inner.close()

    def _check(self, request: httpx2.Request, response: httpx2.Response) -> None:
        if response.is_redirect and "Location" in response.headers:
            target = request.url.join(response.headers["Location"])
            if _origin(target) != self._origin:
                raise _Refused(
                    f"{self._shown} redirected to {_origin(target)}; not followed: "
                    f"a lookup sends citekeys only to {self._shown}"
                )
        if response.is_success:
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not (kind == "application/json" or kind.endswith("+json")):
                raise _Refused(f"{self._shown} answered {kind or 'without a Content-Type'}, not JSON")


class _CappedStream(httpx2.SyncByteStream):
    """A response body, decompressed a bounded step at a time, that fails once more than
    `limit` bytes came in or would come out."""

    def __init__(self, inner: httpx2.SyncByteStream, decoder: _Inflate | None, limit: int, shown: str):
        self._inner = inner
        self._decoder = decoder
        self._limit = limit
        self._shown = shown

    def __iter__(self) -> Iterator[bytes]:
        received = produced = 0
        for chunk in self._inner:
            received += len(chunk)
            self._bound(received)
            for piece in self._decoder.decode(chunk) if self._decoder else (chunk,):
                produced += len(piece)
                self._bound(produced)
                yield piece
        if self._decoder:
            self._decoder.finish()

    def _bound(self, size: int) -> None:
        if size > self._limit:
            raise _Refused(
                f"the answer from {self._shown} is larger than {self._limit / 2**20:g} MiB "
                "(after decompression); stopped reading it"
            )

    def close(self) -> None:
        self._inner.close()


def _decoder(encoding: str, shown: str) -> _Inflate | None:
    """The decoder for a `Content-Encoding`: none for identity, `_Inflate` for gzip and deflate
    (all `_GuardedTransport` asks for); anything else is refused."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip", "deflate"):
        return _Inflate(name, shown)
    raise _Refused(f"{shown} sent a body encoded as {encoding!r}, which was not asked for (only gzip and deflate)")


class _Inflate:
    """gzip or deflate, decompressed at most `_INFLATE_STEP` bytes at a time, so the caller can
    stop a bomb after its cap; deflate is zlib-wrapped or raw, as servers differ. Data after the
    end of the compressed stream is ignored, as httpx does."""

    def __init__(self, encoding: str, shown: str):
        self._encoding = "deflate" if encoding == "deflate" else "gzip"
        self._shown = shown
        self._inflater = zlib.decompressobj(15 if self._encoding == "deflate" else 31)
        self._started = False
        self._fed = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data and not self._inflater.eof:
            self._fed = True
            try:
                piece = self._inflater.decompress(data, _INFLATE_STEP)
            except zlib.error as error:
                if self._encoding == "deflate" and not self._started:  # raw deflate, without the zlib header
                    self._inflater, self._started = zlib.decompressobj(-15), True
                    continue
                raise self._corrupt(error) from None
            self._started = True
            data = self._inflater.unconsumed_tail
            if piece:
                yield piece

    def finish(self) -> None:
        if self._fed and not self._inflater.eof:
            raise self._corrupt("the compressed body ended early")

    def _corrupt(self, reason: object) -> _Refused:
        return _Refused(
            f"the answer from {self._shown} could not be decompressed ({reason}): a corrupt {self._encoding} body"
        )


class _PoliteTransport(httpx2.BaseTransport):
    """Honours `Backoff` and `Retry-After` through an injected clock, with bounded retries,
    and never waits past the deadline.

    The headers are removed before pyzotero sees them: pyzotero would otherwise wait on the
    wall clock, for as long as the server asks, and retry 429s on its own.
    """

    def __init__(
        self, inner: httpx2.BaseTransport, *, clock: Clock, deadline: _Deadline, attempts: int, max_wait_s: float
    ):
        self._inner = inner
        self._clock = clock
        self._deadline = deadline
        self._attempts = attempts
        self._max_wait_s = max_wait_s
        self._not_before = 0.0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        for attempt in range(1, self._attempts + 1):
            if (wait := self._not_before - self._clock.monotonic()) > 0:
                if wait >= self._deadline.left():
                    raise _OutOfTime(f"Zotero asks to wait {wait:.0f} s, longer than the lookup has left")
                self._clock.sleep(wait)
            response = self._inner.handle_request(request)
            delay = _pop_delay(response.headers)
            if response.status_code != 429:
                if delay:
                    self._defer(delay)
                return response
            response.close()
            self._defer(delay or 2.0**attempt)
        raise _RateLimited(f"still rate-limited after {self._attempts} attempts; try again later")

    def close(self) -> None:
        self._inner.close()

    def _defer(self, seconds: float) -> None:
        if seconds > self._max_wait_s:
            raise _RateLimited(f"Zotero asks to wait {seconds:.0f} s before the next request; try again later")
        self._not_before = self._clock.monotonic() + seconds


def _pop_delay(headers: httpx2.Headers) -> float | None:
    """Seconds from `Backoff`/`Retry-After` (Zotero sends seconds), removing both headers."""
    values = [headers.pop(name) for name in ("backoff", "retry-after") if name in headers]
    seconds = [float(v) for v in values if re.fullmatch(r"\s*\d+(\.\d+)?\s*", v)]
    return max(seconds) if seconds else None


class Limits(TypedDict, total=False):
    """What a source may wait for: `clock` (injected by tests), `attempts` per request,
    `max_wait_s` that a rate limit may ask for, `timeout_s` per socket operation, `deadline_s`
    per lookup (the source's default), `max_pages` per listing, `max_body_bytes` per answer
    (after decompression)."""

    clock: Clock | None
    attempts: int
    max_wait_s: float
    timeout_s: float
    deadline_s: float
    max_pages: int
    max_body_bytes: int


class _ApiSource:
    """Lookup through pyzotero, shared by the local and web API."""

    name: str
    DEFAULT_TIMEOUT_S: ClassVar[float]
    DEFAULT_DEADLINE_S: ClassVar[float]
    _unreachable: str
    _forbidden: str
    _not_found: str

    def __init__(
        self,
        *,
        library_id: str,
        library_type: str,
        api_key: str | None,
        local: bool,
        base_url: str,
        clock: Clock | None = None,
        attempts: int = 3,
        max_wait_s: float = 60.0,
        timeout_s: float | None = None,
        deadline_s: float | None = None,
        max_pages: int = 100,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        from pyzotero import Zotero  # 0.2 s; only commands that reach Zotero pay it

        clock = clock or SystemClock()
        timeout_s = self.DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        deadline_s = self.DEFAULT_DEADLINE_S if deadline_s is None else deadline_s

        self._deadline = _Deadline(clock, deadline_s)
        self._timeout_s = timeout_s
        self._max_pages = max_pages
        guarded = _GuardedTransport(
            _deadline_transport(self._deadline, trust_env=not local), base_url=base_url, max_body_bytes=max_body_bytes
        )
        transport = _PoliteTransport(
            guarded, clock=clock, deadline=self._deadline, attempts=attempts, max_wait_s=max_wait_s
        )
        client = httpx2.Client(
            transport=transport,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=timeout_s,
            trust_env=not local,
        )
        self.base_url = base_url.rstrip("/")
        self._zot: Zotero = Zotero(library_id, library_type, api_key, local=local, client=client)
        self._zot.endpoint = self.base_url

    def find(self, citekey: str) -> ZoteroItem:
        self._deadline.start()
        with self._errors(citekey):
            found = self._lookup(citekey)
            children = [c["data"] for c in self._paged(self._zot.children, found["key"])]
            attachments = [c for c in children if c.get("itemType") == "attachment"]
            annotations = [
                annotation_from(a)
                for pdf in attachments
                if pdf.get("contentType") == "application/pdf"
                for a in sorted(
                    (c["data"] for c in self._paged(self._zot.children, pdf["key"])),
                    key=lambda data: str(data.get("annotationSortIndex", "")),
                )
                if a.get("itemType") == "annotation"
            ]
            library = found.get("library") or {}
            return item_from_zotero(
                found["data"],
                parsed_date=(found.get("meta") or {}).get("parsedDate", ""),
                annotations=annotations,
                notes=[c.get("note", "") for c in children if c.get("itemType") == "note"],
                attachments=[attachment_from(a) for a in attachments],
                library_type=library.get("type", "user"),
                library_id=str(library.get("id", "")),
            )

    def _lookup(self, citekey: str) -> dict[str, Any]:
        """A quick search first (`everything` covers `extra`), then a scan of all top-level
        items, for servers whose search misses the citekey; either stops at the first match."""
        searches = (
            self._paged(self._zot.top, q=citekey, qmode="everything"),
            self._paged(self._zot.top),
        )
        for results in searches:
            for found in results:
                if citekey_of(found["data"]) == citekey:
                    return found
        raise ZoteroError("no item has this citekey", source=self.name, item=citekey)

    def _paged(self, fetch: Callable[..., Any], *args: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every result of a listing, a page at a time, by `start` and `Total-Results`; at most
        `max_pages` pages, and a page that repeats the previous one (`start` ignored) ends it."""
        start, previous = 0, None
        for _ in range(self._max_pages):
            page = fetch(*args, start=start, limit=_PAGE_SIZE, **params)
            if not isinstance(page, list):
                raise ValueError(f"a listing answered {type(page).__name__}, not a list of items")
            keys = [entry["key"] for entry in page]
            if page and keys == previous:
                raise _Paging(f"the server sent the same page again for start={start}: it ignores paging")
            response = self._zot.request  # the page's HTTP response: pyzotero keeps the last one
            if response is None:
                raise ValueError("a listing returned without an HTTP response")
            total = int(response.headers.get("Total-Results", 0))
            yield from page
            start, previous = start + len(page), keys
            if not page or start >= total:
                return
        raise _Paging(f"a listing went on past {self._max_pages} pages of {_PAGE_SIZE}; stopped")

    @contextmanager
    def _errors(self, citekey: str) -> Iterator[None]:
        """Every failure of a lookup as a ZoteroError for this citekey (see `_explain`): nothing
        else escapes, so one bad answer can cost a run no more than this citekey."""
        try:
            yield
        except ZoteroError:
            raise
        except Exception as failure:
            raise ZoteroError(self._explain(failure), source=self.name, item=citekey) from failure

    def _explain(self, failure: Exception) -> str:
        """What happened, and what the user can do: only a connection that could not be made is
        "not running"; a dropped one, a redirect loop, a corrupt or oversized body, JSON nested
        past what a parser takes, or a bug below us each say so."""
        from pyzotero import errors as pz

        if isinstance(failure, httpx2.TimeoutException) and self._out_of_time():
            return f"no complete answer within {self._deadline.seconds:g} s; try again later"
        detail = _detail(failure)
        url = self.base_url
        explanations: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
            ((_RateLimited, _OutOfTime, _Paging, _Refused), str(failure)),
            ((httpx2.ConnectError, httpx2.ConnectTimeout), f"{self._unreachable} ({detail})"),
            (httpx2.TimeoutException, f"{url} sent nothing for {self._timeout_s:g} s; try again later"),
            (  # it answered, then the answer broke off
                (httpx2.NetworkError, httpx2.RemoteProtocolError),
                f"the connection to {url} broke off before a complete answer ({detail}); try again",
            ),
            (httpx2.TooManyRedirects, f"{url} redirected more than {MAX_REDIRECTS} times (a redirect loop?); stopped"),
            (httpx2.DecodingError, f"the answer from {url} could not be decompressed ({detail})"),
            (httpx2.RequestError, f"the request to {url} failed ({detail})"),  # a proxy, a protocol…
            (pz.UserNotAuthorisedError, self._forbidden),
            (pz.ResourceNotFoundError, self._not_found),
            (pz.PyZoteroError, f"Zotero API error: {' '.join(str(failure).split())}"),
            (RecursionError, f"malformed answer from {url}: JSON nested too deeply to read"),
            (  # JSON of another shape, or none
                (AttributeError, KeyError, TypeError, ValueError, OverflowError, IndexError),
                f"malformed answer from {url} ({detail})",
            ),
        ]
        for kinds, explanation in explanations:
            if isinstance(failure, kinds):
                return explanation
        _log.warning("a Zotero lookup at %s failed unexpectedly", url, exc_info=failure)
        return f"unexpected failure reading {url} ({detail})"

    def _out_of_time(self) -> bool:
        try:
            self._deadline.left()
        except _OutOfTime:
            return True
        return False


class _Paging(Exception):
    """A listing that would not end; the source turns it into a ZoteroError naming the item."""


def _detail(failure: BaseException) -> str:
    """`Type: message`, or the type alone where the message is empty (httpx's often are)."""
    message = " ".join(str(failure).split())
    return f"{type(failure).__name__}: {message}" if message else type(failure).__name__


class LocalApiSource(_ApiSource):
    """The local API of a running Zotero 7 (Settings → Advanced must allow other apps)."""

    name = "local"
    DEFAULT_TIMEOUT_S = 10.0
    DEFAULT_DEADLINE_S = 60.0

    def __init__(self, *, base_url: str = LOCAL_API_URL, **limits: Unpack[Limits]):
        super().__init__(library_id="0", library_type="user", api_key=None, local=True, base_url=base_url, **limits)
        self._unreachable = f"Zotero is not running or not reachable at {self.base_url}: {_ENABLE_LOCAL_API}"
        self._forbidden = f"Zotero refused the local API at {self.base_url}: {_ENABLE_LOCAL_API}"
        self._not_found = f"no local API at {self.base_url}: it needs Zotero 7 or later"


class WebApiSource(_ApiSource):
    """The zotero.org web API for a user or group library."""

    name = "web"
    DEFAULT_TIMEOUT_S = 30.0
    DEFAULT_DEADLINE_S = 120.0

    def __init__(
        self,
        *,
        library_id: str,
        api_key: str | None,
        library_type: str = "user",
        base_url: str = WEB_API_URL,
        **limits: Unpack[Limits],
    ):
        super().__init__(
            library_id=library_id,
            library_type=library_type,
            api_key=api_key,
            local=False,
            base_url=base_url,
            **limits,
        )
        library = f"{library_type} library {library_id}"
        self._unreachable = f"cannot reach the Zotero web API at {self.base_url}"
        self._forbidden = f"the Zotero web API refused access to {library}: check ZOTERO_API_KEY"
        self._not_found = f"the Zotero web API has no {library}: check ZOTERO_LIBRARY_ID and ZOTERO_LIBRARY_TYPE"


@dataclass(frozen=True)
class WebCredentials:
    """Where the web API finds a library; the key may be empty for a public library."""

    library_id: str
    api_key: str = ""
    library_type: str = "user"


def user_config_path() -> Path:
    """`$XDG_CONFIG_HOME/actadd-notes/config.toml` (default `~/.config/…`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "actadd-notes" / "config.toml"


def web_credentials() -> WebCredentials:
    """Credentials from ZOTERO_LIBRARY_ID / ZOTERO_API_KEY / ZOTERO_LIBRARY_TYPE, each falling
    back to `library_id` / `api_key` / `library_type` in the `[zotero]` table of the user
    config file. ZoteroError says what is missing."""
    path = user_config_path()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("zotero", {}) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ZoteroError(f"cannot read the Zotero web credentials in {path}: {error}") from error
    values = {
        field: os.environ.get(f"ZOTERO_{field.upper()}") or str(table.get(field, ""))
        for field in ("library_id", "api_key", "library_type")
    }
    if not values["library_id"]:
        raise ZoteroError(
            "no Zotero web library configured: set ZOTERO_LIBRARY_ID and ZOTERO_API_KEY, "
            f"or library_id and api_key under [zotero] in {path}"
        )
    values["library_type"] = values["library_type"] or "user"
    if values["library_type"] not in ("user", "group"):
        raise ZoteroError(f"Zotero library type {values['library_type']!r} is not 'user' or 'group'")
    return WebCredentials(**values)
