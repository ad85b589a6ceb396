"""Shared pieces of the security tests: a run store with one (unstarted) run, the real dashboard server on an
ephemeral loopback port, a raw HTTP client that sends exactly the bytes a test asks for, and a corpus of known
Jinja server-side template injection payloads."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chat.conftest import tiny_config

# -- a run store ---------------------------------------------------------------------------------------------


@pytest.fixture
def run_root(tmp_path, small_files, embed_cache) -> Path:
    """``tmp_path/store`` holding run ``r1`` (created, never started: control flags are all it needs)."""
    from activesynth.agent.config import RunConfig
    from activesynth.agent.runs import Run

    root = tmp_path / "store"
    root.mkdir()
    Run.create(root / "r1", RunConfig.model_validate(tiny_config(small_files, embed_cache)))
    return root


def paused(root: Path, rid: str = "r1") -> bool:
    """Whether run ``rid`` has been asked to pause (the state a cross-site request would change)."""
    from activesynth.agent.runs import Run

    return bool(Run.open(root / rid).get_state("control.pause", False))


# -- the real server -----------------------------------------------------------------------------------------


@dataclass
class Served:
    server: object
    port: int
    root: Path
    token: str | None = None
    threads: list = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def page_token(self) -> str:
        """The token the page at ``/`` carries (what the real page's script sends back)."""
        r = http(self.port, "GET", "/")
        assert r.status == 200
        m = re.search(rb'<meta name="activesynth-token" content="([^"]+)">', r.body)
        assert m, "the page does not carry its token"
        return m.group(1).decode()


@pytest.fixture
def serve():
    """``serve(root, token=None, **kw)`` starts the real server in a thread; all are stopped afterwards."""
    from activesynth.agent.chat.session import ChatSession
    from activesynth.agent.web.server import make_server

    started: list = []

    def start(root: Path, token: str | None = None, **kw) -> Served:
        session = ChatSession(root, model=None)
        server = make_server(root, "127.0.0.1", 0, token=token, session=session, **kw)
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        started.append(server)
        return Served(server, server.server_address[1], root, token)

    yield start
    for server in started:
        server.shutdown()
        server.server_close()
        server.session.box.manager.shutdown()


# -- a raw HTTP client ---------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str | None = None,
    content_length: str | None = None,
    timeout: float = 10.0,
    keep_open: bool = False,
) -> Response:
    """Send one request byte for byte (``Host`` and ``Content-Length`` as given) and read the answer until the
    server closes. ``keep_open``: do not half-close after sending (a client that promised more body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    elif body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        if not keep_open:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    seconds = time.monotonic() - t0
    head, _, payload = data.partition(b"\r\n\r\n")
    if not head:
        return Response(0, {}, b"", seconds)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        parsed[k.strip().lower()] = v.strip()
    return Response(int(status_line.split()[1]), parsed, payload, seconds)


def post_json(served: Served, text: str, token: str | None, **kw) -> Response:
    """A chat POST the way the page sends it (JSON, the token header, this server's own Origin)."""
    import json

    headers = {"Content-Type": "application/json", "Origin": served.origin}
    if token:
        headers["X-Activesynth-Token"] = token
    headers.update(kw.pop("headers", {}))
    return http(served.port, "POST", "/api/chat", headers, json.dumps({"text": text}).encode(), **kw)


# -- known Jinja SSTI payloads -------------------------------------------------------------------------------

# Each tries to run a command that creates MARKER, to run `id`, or to reach Python internals. ``{M}`` is
# replaced by the marker path. Sources: the usual public SSTI cheat sheets (MRO walk, function globals,
# template reference context, attr filter, escaped names, str.format traversal, mutation, includes).
SSTI_PAYLOADS = {
    "mro_subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mro_popen": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
        "{{ c(['touch', '{M}']).wait() }}{% endif %}{% endfor %}"
    ),
    "base_subclasses": "{{ ().__class__.__base__.__subclasses__() }}",
    "cycler_globals_os": "{{ cycler.__init__.__globals__.os.system('touch {M}') }}",
    "joiner_globals_popen_id": "{{ joiner.__init__.__globals__.os.popen('id > {M}').read() }}",
    "namespace_globals": "{{ namespace.__init__.__globals__.os.system('touch {M}') }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'].system('touch {M}') }}",
    "lipsum_builtins_import": ("{{ lipsum.__globals__.__builtins__.__import__('os').system('touch {M}') }}"),
    "template_reference_context": (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {M}') }}"
    ),
    "self_init_globals": "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {M}') }}",
    "attr_filter_chain": ("{{ (''|attr('__class__')|attr('__mro__')|last|attr('__subclasses__'))() }}"),
    "attr_filter_dynamic_name": (
        "{% set u = '_' ~ '_' %}{{ (''|attr(u ~ 'class' ~ u)|attr(u ~ 'base' ~ u)"
        "|attr(u ~ 'subclasses' ~ u))() }}"
    ),
    "getitem_escaped_name": "{{ ''['\\x5f\\x5fclass\\x5f\\x5f']['\\x5f\\x5fmro\\x5f\\x5f'] }}",
    "getitem_dynamic_name": "{% set n = '__cla' ~ 'ss__' %}{{ examples[n] }}",
    "request_style": (
        "{{ request.application.__globals__.__builtins__.__import__('os').popen('id > {M}').read() }}"
    ),
    "config_style": "{{ config.__class__.__init__.__globals__['os'].popen('touch {M}').read() }}",
    "format_traversal": "{{ '{0.__class__.__mro__}'.format(examples) }}",
    "format_map_traversal": "{{ '{x.__class__}'.format_map({'x': examples}) }}",
    "type_mro_method": "{{ dict.mro()[-1].__subclasses__() }}",
    "set_then_unused": "{% set c = ''.__class__ %}fine",
    "mutate_list": "{{ examples.append('x') }}",
    "include_file": "{% include '/etc/passwd' %}",
    "import_module": "{% import 'os' as os %}{{ os.system('touch {M}') }}",
}

#: ``request`` and ``config`` of the Flask-style payloads, as a careless caller might pass them
FLASK_LIKE = {"request", "config"}


def wrap(payload: str, where: str) -> str:
    """The payload at the top level, in a branch taken only with examples, or in a loop over them."""
    if where == "top":
        return payload
    if where == "if_examples":
        return "{% if examples %}" + payload + "{% endif %}"
    if where == "for_examples":
        return "{% for ex in examples %}{% if loop.last %}" + payload + "{% endif %}{% endfor %}"
    raise ValueError(where)


PLACES = ("top", "if_examples", "for_examples")


def template_file(payload: str, where: str, marker: Path) -> str:
    """A complete template (header and a harmless list around the payload)."""
    body = wrap(payload.replace("{M}", str(marker)), where)
    return (
        "{#- ---\nmode: completion\nfamily: list\ndescription: test\n--- -#}\n"
        '{{ task }}. Messages with the intent "{{ label_text }}":\n'
        "{% for ex in examples -%}\n{{ loop.index }}. {{ ex }}\n{% endfor -%}\n"
        + body
        + "\n{{ examples | length + 1 }}."
    )
