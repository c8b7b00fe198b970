"""A real HTTP server shaped like the Zotero API (local `/api/users/0/…` or web `/users/ID/…`),
so the Zotero sources are tested through pyzotero and httpx, not against mocks.

It serves top-level items and children in Zotero's JSON (`key`, `library`, `meta`, `data`),
pages by `start`/`limit` with `Total-Results` and `Link` headers, runs quick searches (`q`,
`qmode=everything`), and can refuse (403), rate-limit (429 + Retry-After) or ask for a `Backoff`.
It also misbehaves as a hostile or broken server would: it trickles its answers a byte at a
time (`trickle_s`), ignores `start` while claiming endless results (`bogus_paging`), or sends
a body that is not the JSON Zotero sends (`malformed`). Below the JSON, `moved` redirects a
path prefix on the same host, and `raw` answers every request with a `Raw` as it is: a
redirect, a corrupt or bomb-sized compressed body, an endless body, or a connection reset.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

LIBRARY = Path(__file__).parent / "data" / "zotero-api-library.json"


@dataclass
class Raw:
    """An answer sent byte for byte, whatever was asked: `body` is bytes (sent with a
    Content-Length unless `headers` has one) or a callable giving chunks (sent until they end or
    the client hangs up); `reset` closes the connection with a TCP reset instead of answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes | Callable[[], Iterable[bytes]] = b""
    reset: bool = False


@dataclass
class ZoteroServer:
    """What the server holds and how it misbehaves; tests change the knobs between requests."""

    items: list[dict[str, Any]]
    prefix: str = ""  # "/api" for the local API
    library_type: str = "user"
    library_id: str = "0"
    api_key: str | None = None  # required as `Authorization: Bearer …` when set
    max_limit: int = 100
    search_misses: bool = False  # a quick search that never matches, to force the full scan
    forbidden: str | None = None  # body of a 403 for every request
    rate_limited: int = 0  # the next N requests get a 429
    retry_after: str | None = "2"
    backoff: str | None = None  # a `Backoff` header on the next successful response
    trickle_s: float = 0.0  # seconds between the bytes of each answer (headers and body)
    bogus_paging: bool = False  # `start` ignored, `Total-Results` a million
    malformed: str | None = None  # sent as the body of every 200 answer instead of the items
    raw: Raw | None = None  # sent for every request instead of anything above
    moved: str | None = None  # a path prefix: requests under it get a 301 to the same path without it
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def respond(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        self.requests.append((path, query))
        if self.moved and path.startswith(self.moved + "/"):
            return 301, {"Location": f"{path.removeprefix(self.moved)}?{urlencode(query)}"}, ""
        if self.forbidden is not None:
            return 403, {}, self.forbidden
        if self.rate_limited:
            self.rate_limited -= 1
            return 429, {"Retry-After": self.retry_after} if self.retry_after else {}, "Too many requests"
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 403, {}, "Invalid key"
        items = f"{self.prefix}/{self.library_type}s/{self.library_id}/items"
        match = re.fullmatch(re.escape(items) + r"/(?:top|(?P<key>[A-Z0-9]{8})/children)", path)
        if not match:
            return 404, {}, "Not found"
        selected = [i for i in self.items if i.get("parentItem") == match["key"]]  # top: no parent
        if q := query.get("q"):
            assert query.get("qmode") == "everything"  # the default mode would not search `extra`
            found = [i for i in selected if q.lower() in json.dumps(i, ensure_ascii=False).lower()]
            selected = [] if self.search_misses else found
        if self.bogus_paging:
            return 200, {"Total-Results": "1000000"}, [self._wrap(i) for i in selected[:1]]
        return self._page(path, query, selected)

    def _page(
        self, path: str, query: dict[str, str], selected: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], list]:
        start = int(query.get("start", 0))
        limit = min(int(query.get("limit", 25)), self.max_limit)
        headers = {"Total-Results": str(len(selected))}
        if start + limit < len(selected):
            next_query = urlencode({**query, "start": start + limit, "limit": limit})
            headers["Link"] = f'<{self.url.removesuffix(self.prefix)}{path}?{next_query}>; rel="next"'
        return 200, headers, [self._wrap(i) for i in selected[start : start + limit]]

    def _wrap(self, data: dict[str, Any]) -> dict[str, Any]:
        meta = {"parsedDate": data["date"]} if data.get("date") else {}
        library = {"type": self.library_type, "id": int(self.library_id), "name": "My Library"}
        version = data.get("version", 1)
        return {"key": data["key"], "version": version, "library": library, "links": {}, "meta": meta, "data": data}


def load_library() -> list[dict[str, Any]]:
    return json.loads(LIBRARY.read_text(encoding="utf-8"))["items"]


class _Trickle:
    """A response stream that sends one byte, then waits, until the client gives up."""

    def __init__(self, inner: Any, pause: float):
        self._inner = inner
        self._pause = pause
        self._deadline = time.monotonic() + 30  # bounded: the server never trickles for long

    def write(self, data: bytes) -> int:
        for byte in data:
            if time.monotonic() > self._deadline:
                raise ConnectionError("trickled long enough")
            self._inner.write(bytes([byte]))
            self._inner.flush()
            time.sleep(self._pause)
        return len(data)

    def flush(self) -> None:
        self._inner.flush()


def send_raw(handler: BaseHTTPRequestHandler, raw: Raw) -> None:
    """Send `raw` as the answer to the request `handler` is serving."""
    if raw.reset:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()  # linger 0: a RST, not a FIN
        handler.close_connection = True
        return
    handler.send_response(raw.status)
    if isinstance(raw.body, bytes) and not any(h.lower() == "content-length" for h in raw.headers):
        handler.send_header("Content-Length", str(len(raw.body)))
    for name, value in raw.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if isinstance(raw.body, bytes):
        handler.wfile.write(raw.body)
        return
    stop = time.monotonic() + 60  # bounded: an endless body ends when the client hangs up, or here
    for chunk in raw.body():
        if time.monotonic() > stop:
            break
        handler.wfile.write(chunk)


@contextmanager
def serve_zotero(**knobs: Any) -> Iterator[ZoteroServer]:
    """Serve the test library on 127.0.0.1 at a free port until the block ends."""
    state = ZoteroServer(items=knobs.pop("items", None) or load_library(), **knobs)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            if state.raw is not None:
                state.requests.append((parts.path, query))
                send_raw(self, state.raw)
                return
            status, extra, body = state.respond(parts.path, query, headers)
            if status == 200 and state.malformed is not None:
                body = state.malformed
            is_json = not isinstance(body, str) or status == 200
            payload = (json.dumps(body) if not isinstance(body, str) else body).encode()
            if state.trickle_s:
                self.wfile = _Trickle(self.wfile, state.trickle_s)
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if is_json else "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Zotero-API-Version", "3")
            if status == 200 and state.backoff:
                self.send_header("Backoff", state.backoff)
                state.backoff = None
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up on a trickle: expected, and nothing to report

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}{state.prefix}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
