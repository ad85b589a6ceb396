"""``activesynth serve``: a small stdlib HTTP server with a chat panel and a live dashboard of one run.

JSON API (all GET unless noted; ``X-Token`` header or ``?token=`` when a token is set):
``/api/runs``, ``/api/run?id=`` (status, rounds, curves, report, plots, prompt versions), ``/api/samples?id=&
kind=&label=&round=&limit=``, ``/api/prompt?id=&ref=``, ``/api/plot?id=&path=`` (PNG), POST ``/api/chat``
``{"text"}``. Binds 127.0.0.1 by default; any other address needs an access token.
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from activesynth.agent.chat.store import RunStore, StoreError, redact

__all__ = ["LOOPBACK", "ServeError", "make_server"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'"


class ServeError(ValueError):
    """The server cannot start as asked."""


def _report_view(store: RunStore, rid: str) -> dict | None:
    try:
        rep = store.report(rid, top=15)
    except (StoreError, Exception):  # noqa: BLE001 - no report yet
        return None
    return {"round": rep["round"], "per_class": rep["per_class"], "clusters": rep["clusters"]}


def run_view(store: RunStore, rid: str) -> dict:
    """Everything the dashboard shows for one run (or comparison folder)."""
    path = store.resolve(rid)
    is_run = (path / "run.json").exists()
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
        from activesynth.agent.chat.manager import is_busy

        view["status"]["busy"] = is_busy(path)
    return view


def make_server(
    root: Path, host: str = "127.0.0.1", port: int = 7860, token: str | None = None, session=None
):
    """A ready ``ThreadingHTTPServer`` (call ``serve_forever``); refuses a non-loopback host without token."""
    from activesynth.agent.chat.session import ChatSession
    from activesynth.agent.web.page import APP_JS, PAGE

    if host not in LOOPBACK and not token:
        raise ServeError(
            f"refusing to listen on {host} without an access token: "
            "pass --token or set ACTIVESYNTH_SERVE_TOKEN"
        )
    session = session or ChatSession(root)
    store = session.store
    chat_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "activesynth"

        def log_message(self, fmt, *args):  # quiet
            return None

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", _CSP)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, data, code: int = 200) -> None:
            body = redact(json.dumps(data, ensure_ascii=False, default=str)).encode()
            self._send(code, body, "application/json; charset=utf-8")

        def _authorized(self, query: dict) -> bool:
            if not token:
                return True
            given = self.headers.get("X-Token") or (query.get("token") or [""])[0]
            return hmac.compare_digest(given.encode(), token.encode())

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            q = parse_qs(url.query)
            if url.path in ("/", "/index.html"):
                return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            if url.path == "/app.js":
                return self._send(200, APP_JS.encode(), "text/javascript; charset=utf-8")
            if not url.path.startswith("/api/"):
                return self._json({"error": "not found"}, 404)
            if not self._authorized(q):
                return self._json({"error": "missing or wrong access token"}, 401)

            def arg(name, default=None):
                return (q.get(name) or [default])[0]

            try:
                if method == "POST" and url.path == "/api/chat":
                    n = min(int(self.headers.get("Content-Length") or 0), 200_000)
                    text = str(json.loads(self.rfile.read(n) or b"{}").get("text", ""))
                    with chat_lock:
                        reply = session.handle(text)
                    return self._json({"reply": reply, "current": session.box.current})
                if method != "GET":
                    return self._json({"error": "method not allowed"}, 405)
                if url.path == "/api/runs":
                    return self._json({"runs": store.list_runs(), "current": session.box.current})
                if url.path == "/api/run":
                    return self._json(run_view(store, arg("id", "")))
                if url.path == "/api/samples":
                    rnd = arg("round")
                    data = store.samples(
                        arg("id", ""), arg("kind", "all"), int(rnd) if rnd else None, arg("label") or None,
                        min(int(arg("limit", "50")), 500),
                    )  # fmt: skip
                    return self._json(data)
                if url.path == "/api/prompt":
                    ref = arg("ref", "")
                    for v in store.prompt_versions(arg("id", "")):
                        if v["ref"] == ref:
                            return self._json(v)
                    return self._json({"error": f"no prompt version {ref}"}, 404)
                if url.path == "/api/plot":
                    f = store.file(arg("id", ""), arg("path", ""))
                    return self._send(200, f.read_bytes(), "image/png")
                return self._json({"error": "not found"}, 404)
            except (StoreError, ValueError, KeyError) as e:
                return self._json({"error": str(e).splitlines()[0] if str(e) else type(e).__name__}, 400)

        def do_GET(self):  # noqa: N802
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.session = session
    return server
