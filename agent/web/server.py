"""``activesynth serve``: a small stdlib HTTP server with a chat panel and a live dashboard of one run.

JSON API (all GET unless noted): ``/api/runs``, ``/api/run?id=`` (status, rounds, curves, report, plots,
prompt versions), ``/api/samples?id=&kind=&label=&round=&limit=``, ``/api/prompt?id=&ref=``,
``/api/plot?id=&path=`` (PNG), POST ``/api/chat`` ``{"text"}``.

Who may do what (see SECURITY.md):

- Every request must name this server in ``Host`` (the bound address or a loopback name, with the right port;
  any name when bound to a wildcard address, where the token guards everything): a DNS-rebinding page cannot
  read the page or the API under its own host name. A request to ``/api/`` that carries an ``Origin`` must
  come from this server's own origin.
- Every POST needs the server's token in the ``X-Activesynth-Token`` header (``X-Token`` works too; never in
  the query string) and a JSON body (``application/json``, else 415). The token is the user's ``--token``, or
  a random one made at start and embedded only in the page served at ``/``, which a page of another origin
  cannot read. This holds on loopback too, so a web page open in another tab cannot drive the chat.
- With a user ``--token`` every ``/api/`` request (GET too) needs it (header or ``?token=``); the page itself
  never contains it. Any address other than loopback needs a user token.
- Bodies: at most ``MAX_BODY`` bytes, a valid ``Content-Length``, a JSON object; every socket has a timeout.
- Responses carry a CSP with ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer`` and a ``Server`` header without versions; error bodies are one line without absolute paths.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from activesynth.agent.chat.store import RunStore, StoreError, public_message, redact
from activesynth.agent.runs import Run, RunError

__all__ = ["LOOPBACK", "MAX_BODY", "TOKEN_HEADER", "ServeError", "make_server"]

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_WILDCARD = ("0.0.0.0", "::", "")
TOKEN_HEADER = "X-Activesynth-Token"
MAX_BODY = 200_000
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = (
    ("Content-Security-Policy", _CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


class ServeError(ValueError):
    """The server cannot start as asked."""


class _Refused(Exception):
    """A request answered with an error status and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _report_view(store: RunStore, rid: str) -> dict | None:
    try:
        rep = store.report(rid, top=15)
    except (StoreError, Exception):  # noqa: BLE001 - no report yet
        return None
    return {"round": rep["round"], "per_class": rep["per_class"], "clusters": rep["clusters"]}


def run_view(store: RunStore, rid: str) -> dict:
    """Everything the dashboard shows for one run (or comparison folder)."""
    path = store.resolve(rid)
    is_run = Run.is_run(path)
    view = {
        "id": rid,
        "status": store.status(rid, n_events=15),
        "curves": store.curves(rid),
        "plots": store.plots(rid),
        "rounds": store.rounds_table(rid) if is_run else [],
        "report": _report_view(store, rid) if is_run else None,
        "prompts": [v["ref"] for v in store.prompt_versions(rid)] if is_run else [],
    }
    if is_run:
        view["status"]["busy"] = Run.is_busy(path)
    return view


def _split_host(value: str) -> tuple[str, int | None]:
    """``Host`` value → (lower-case name without a trailing dot, port); ``("", None)`` when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    elif ":" in value:
        return "", None
    else:
        name, port = value, ""
    if port and not port.isdigit():
        return "", None
    return name.rstrip("."), int(port) if port else 80


def _arg(query: dict, name: str, default: str | None = None) -> str | None:
    """The first value of query parameter ``name``, else ``default``."""
    return (query.get(name) or [default])[0]


@dataclass(frozen=True)
class _Settings:
    """What every request of one server needs, fixed when the server is made."""

    session: object  # the ChatSession answering /api/chat (and naming the current run)
    store: RunStore  # the run store the API reads
    token: str | None  # the user's --token: every /api/ request needs it (a header, or ?token= for GET)
    post_token: str  # what a POST must carry: the user's token, else a random one embedded in the page
    page: bytes  # the page served at /
    app_js: bytes  # the page's script, served at /app.js
    names: frozenset[str] | None  # names a Host header may give (None: any, when bound to a wildcard address)
    timeout: float  # socket timeout of every connection, in seconds
    chat_lock: threading.Lock = field(default_factory=threading.Lock)  # one chat turn at a time


class _Handler(BaseHTTPRequestHandler):
    """One request to the dashboard: the checks (Host, Origin, token, body) first, then routing. Reads its
    settings from ``self.server.settings`` (a :class:`_Server`)."""

    server_version = "activesynth"
    sys_version = ""
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"

    @property
    def settings(self) -> _Settings:
        return self.server.settings  # type: ignore[attr-defined]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt, *args):  # quiet
        return None

    def setup(self) -> None:
        self.timeout = self.settings.timeout  # read by StreamRequestHandler.setup: every socket gets it
        super().setup()

    def end_headers(self) -> None:
        for name, value in _HEADERS:
            self.send_header(name, value)
        super().end_headers()

    # -- responses -------------------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if code >= 400:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, code: int = 200) -> None:
        body = redact(json.dumps(data, ensure_ascii=False, default=str)).encode()
        self._send(code, body, "application/json; charset=utf-8")

    def _error(self, code: int, message: str) -> None:
        self._json({"error": public_message(message, self.settings.store.root)}, code)

    def _linger(self) -> None:
        """Read what the client still sends (briefly) before closing, so that closing with unread bytes
        does not reset the connection under the answer."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            deadline, seen = time.monotonic() + 2.0, 0
            while time.monotonic() < deadline and seen < 4 * MAX_BODY:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                seen += len(chunk)
        except OSError:
            pass

    # -- checks ----------------------------------------------------------------------------------------------
    def _check_access(self, method: str, api: bool, host_value: str, query: dict) -> None:
        """Origin (API requests) and token (every POST; every API request with a user token)."""
        if api:
            self._check_origin(host_value)
        if method == "POST":
            self._check_token(self.settings.post_token, query, allow_query=False)
        elif api and self.settings.token:
            self._check_token(self.settings.token, query, allow_query=True)

    def _check_host(self) -> str:
        value = self.headers.get("Host") or ""
        name, port_ = _split_host(value)
        names = self.settings.names
        known = names is None or name in names
        if not name or not known or port_ != self.server.server_address[1]:
            raise _Refused(403, "unexpected Host header: open the dashboard by the address it listens on")
        return value.strip().lower()

    def _check_origin(self, host_value: str) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() != f"http://{host_value}":
            raise _Refused(403, "cross-origin request refused")

    def _given_token(self, query: dict, allow_query: bool) -> str:
        given = self.headers.get(TOKEN_HEADER) or self.headers.get("X-Token") or ""
        if not given and allow_query:
            given = (query.get("token") or [""])[0]
        return given

    def _check_token(self, expected: str, query: dict, allow_query: bool) -> None:
        given = self._given_token(query, allow_query)
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise _Refused(401, "missing or wrong access token")

    def _content_length(self) -> int:
        """The body's length as its one ``Content-Length`` header gives it (JSON bodies only)."""
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(415, "send the body as application/json")
        if self.headers.get("Transfer-Encoding"):
            raise _Refused(411, "send the body with a Content-Length, not chunked")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise _Refused(411, "missing Content-Length")
        raw = lengths[0].strip()
        if len(lengths) > 1 or not raw.isascii() or not raw.isdigit():
            raise _Refused(400, "bad Content-Length: give one whole number of bytes")
        n = int(raw)
        if n > MAX_BODY:
            raise _Refused(413, f"body too large (at most {MAX_BODY} bytes)")
        if n == 0:
            raise _Refused(400, 'empty body: send a JSON object like {"text": "/status"}')
        return n

    def _read_json(self) -> dict:
        n = self._content_length()
        try:
            data = self.rfile.read(n)
        except TimeoutError:
            raise _Refused(408, "the body did not arrive in time") from None
        if len(data) < n:
            raise _Refused(400, "the body is shorter than its Content-Length")
        self._body_done = True
        try:
            obj = json.loads(data.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise _Refused(400, "the body is not valid JSON (UTF-8)") from None
        if not isinstance(obj, dict):
            raise _Refused(400, 'the body must be a JSON object like {"text": "/status"}')
        if set(obj) - {"text"} or not isinstance(obj.get("text"), str):
            raise _Refused(400, 'the body must hold one string, "text", like {"text": "/status"}')
        return obj

    # -- routing ---------------------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        host_value = self._check_host()
        url = urlparse(self.path)
        query = parse_qs(url.query)
        api = url.path.startswith("/api/")
        self._check_access(method, api, host_value, query)
        if method == "GET" and url.path in ("/", "/index.html"):
            return self._send(200, self.settings.page, "text/html; charset=utf-8")
        if method == "GET" and url.path == "/app.js":
            return self._send(200, self.settings.app_js, "text/javascript; charset=utf-8")
        if not api:
            raise _Refused(404 if method == "GET" else 405, "not found")
        if method == "POST":
            return self._post_api(url.path)
        return self._get_api(url.path, query)

    def _post_api(self, path: str) -> None:
        if path != "/api/chat":
            raise _Refused(404, "not found")
        text = self._read_json()["text"]
        session = self.settings.session
        with self.settings.chat_lock:
            reply = session.handle(text)
        return self._json({"reply": reply, "current": session.box.current})

    _GET_API = {
        "/api/runs": "_get_runs",
        "/api/run": "_get_run",
        "/api/samples": "_get_samples",
        "/api/prompt": "_get_prompt",
        "/api/plot": "_get_plot",
    }

    def _get_api(self, path: str, query: dict) -> None:
        """Answer a GET under ``/api/``; what the store refuses is a 400 with its one-line reason."""
        try:
            if path == "/api/chat":
                raise _Refused(405, "method not allowed")
            if path not in self._GET_API:
                raise _Refused(404, "not found")
            return getattr(self, self._GET_API[path])(query)
        except (StoreError, RunError, ValueError, KeyError, OSError) as e:
            raise _Refused(400, str(e) or type(e).__name__) from None

    def _get_runs(self, query: dict) -> None:
        self._json({"runs": self.settings.store.list_runs(), "current": self.settings.session.box.current})

    def _get_run(self, query: dict) -> None:
        self._json(run_view(self.settings.store, _arg(query, "id", "")))

    def _get_samples(self, query: dict) -> None:
        rnd = _arg(query, "round")
        data = self.settings.store.samples(
            _arg(query, "id", ""), _arg(query, "kind", "all"), int(rnd) if rnd else None,
            _arg(query, "label") or None, min(int(_arg(query, "limit", "50")), 500),
        )  # fmt: skip
        self._json(data)

    def _get_prompt(self, query: dict) -> None:
        ref = _arg(query, "ref", "")
        for v in self.settings.store.prompt_versions(_arg(query, "id", "")):
            if v["ref"] == ref:
                return self._json(v)
        raise _Refused(404, f"no prompt version {ref}")

    def _get_plot(self, query: dict) -> None:
        f = self.settings.store.file(_arg(query, "id", ""), _arg(query, "path", ""))
        self._send(200, f.read_bytes(), "image/png")

    def _handle(self, method: str) -> None:
        self._body_done = method != "POST"
        try:
            self._route(method)
        except _Refused as e:
            self._respond_error(e.code, str(e))
        except Exception:  # noqa: BLE001 - a failing request must not drop the connection
            logger.exception("dashboard: %s %s failed", method, urlparse(self.path).path)
            self._respond_error(500, "internal error (the server log has the details)")
        if not self._body_done:
            self._linger()

    def _respond_error(self, code: int, message: str) -> None:
        try:
            self._error(code, message)
        except OSError:  # the client went away
            self.close_connection = True

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


class _Server(ThreadingHTTPServer):
    """The dashboard's HTTP server: IPv6 when the host is an IPv6 address; ``settings`` for the handler."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], settings: _Settings) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.settings = settings
        self.session = settings.session
        super().__init__(address, _Handler)


def make_server(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    token: str | None = None,
    session=None,
    timeout: float = 10.0,
):
    """A ready ``ThreadingHTTPServer`` (call ``serve_forever``). Refuses a non-loopback host without a token
    and a ``root`` that is not an existing folder. ``timeout``: seconds a client may take to send a request
    (every connection's socket timeout)."""
    from activesynth.agent.chat.session import ChatSession
    from activesynth.agent.web.page import APP_JS, page_html

    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ServeError(f"run store {root} {what}: create it first or pass --root of an existing folder")
    if host not in LOOPBACK and not token:
        raise ServeError(
            f"refusing to listen on {host} without an access token: "
            "pass --token or set ACTIVESYNTH_SERVE_TOKEN"
        )
    session = session or ChatSession(root)
    post_token = token or secrets.token_urlsafe(32)  # what a POST must carry
    settings = _Settings(
        session=session,
        store=session.store,
        token=token,
        post_token=post_token,
        page=page_html(None if token else post_token).encode(),  # a user token is never put in the page
        app_js=APP_JS.encode(),
        names=None if host in _WILDCARD else frozenset({*LOOPBACK, host.lower().strip("[]").rstrip(".")}),
        timeout=timeout,
    )
    return _Server((host, port), settings)
