"""The dashboard server against a hostile web page and hostile clients: cross-site POSTs, DNS rebinding,
framing, lying ``Content-Length`` headers, odd JSON bodies, symlinks in the run store and error messages that
would show where files live. The real server runs on an ephemeral loopback port in a thread."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.security.conftest import http, paused, post_json


def _pause_body() -> bytes:
    return json.dumps({"text": "/pause r1"}).encode()


# -- cross-site requests -------------------------------------------------------------------------------------


def test_cross_origin_text_plain_post_is_refused(run_root, serve):
    """What any web page can send without a preflight: a text/plain POST from its own origin."""
    served = serve(run_root)
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example"}
    r = http(served.port, "POST", "/api/chat", headers, _pause_body())
    assert r.status in (401, 403, 415), r.text
    assert not paused(run_root)


def test_post_without_the_token_is_refused(run_root, serve):
    served = serve(run_root)
    r = post_json(served, "/pause r1", token=None)
    assert r.status == 401 and "token" in json.loads(r.body)["error"]
    r = post_json(served, "/pause r1", token="not-the-token")
    assert r.status == 401
    assert not paused(run_root)


def test_post_with_the_token_in_the_query_only_is_refused(run_root, serve):
    served = serve(run_root)
    token = served.page_token()
    headers = {"Content-Type": "application/json", "Origin": served.origin}
    r = http(served.port, "POST", f"/api/chat?token={token}", headers, _pause_body())
    assert r.status == 401
    assert not paused(run_root)


def test_post_with_a_foreign_origin_is_refused(run_root, serve):
    served = serve(run_root)
    token = served.page_token()
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{served.port + 1}", "https://127.0.0.1"):
        r = post_json(served, "/pause r1", token, headers={"Origin": origin})
        assert r.status == 403, (origin, r.text)
    assert not paused(run_root)


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_only_json_is_accepted(run_root, serve, ctype):
    served = serve(run_root)
    token = served.page_token()
    headers = {"Origin": served.origin, "X-Activesynth-Token": token}
    if ctype:
        headers["Content-Type"] = ctype
    r = http(served.port, "POST", "/api/chat", headers, _pause_body())
    assert r.status == 415, r.text
    assert not paused(run_root)


def test_same_page_post_with_the_token_works(run_root, serve):
    served = serve(run_root)
    token = served.page_token()
    r = post_json(served, "/pause r1", token)
    assert r.status == 200, r.text
    assert paused(run_root)
    # the same with the content type's parameters and a localhost name
    port = served.port
    r = http(
        port, "POST", "/api/chat",
        {"Content-Type": "application/json; charset=utf-8", "Origin": f"http://localhost:{port}",
         "X-Activesynth-Token": token},
        json.dumps({"text": "/resume r1"}).encode(), host=f"localhost:{port}",
    )  # fmt: skip
    assert r.status == 200, r.text
    assert not paused(run_root)


def test_each_server_has_its_own_page_token(run_root, serve):
    a, b = serve(run_root), serve(run_root)
    ta, tb = a.page_token(), b.page_token()
    assert ta != tb and len(ta) >= 32
    assert post_json(b, "/pause r1", ta).status == 401
    assert not paused(run_root)


# -- DNS rebinding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}"]
)
def test_foreign_host_header_is_refused(run_root, serve, host):
    served = serve(run_root)
    token = served.page_token()
    host = host.format(port=served.port)
    r = http(served.port, "GET", "/", host=host)
    assert r.status in (400, 403, 421) and token.encode() not in r.body
    assert http(served.port, "GET", "/api/runs", host=host).status in (400, 403, 421)
    headers = {"Content-Type": "application/json", "X-Activesynth-Token": token}
    r = http(served.port, "POST", "/api/chat", headers, _pause_body(), host=host)
    assert r.status in (400, 403, 421)
    assert not paused(run_root)


def test_get_from_another_origin_is_refused(run_root, serve):
    served = serve(run_root)
    r = http(served.port, "GET", "/api/runs", {"Origin": "http://evil.example"})
    assert r.status == 403
    assert http(served.port, "GET", "/api/runs", {"Origin": served.origin}).status == 200


# -- with a user token ---------------------------------------------------------------------------------------


def test_user_token_guards_every_api_request_and_is_not_in_the_page(run_root, serve):
    served = serve(run_root, token="user-secret-token-1")
    page = http(served.port, "GET", "/")
    assert page.status == 200 and b"user-secret-token-1" not in page.body
    assert http(served.port, "GET", "/api/runs").status == 401
    assert http(served.port, "GET", "/api/runs?token=user-secret-token-1").status == 200
    assert http(served.port, "GET", "/api/runs", {"X-Activesynth-Token": "user-secret-token-1"}).status == 200
    assert post_json(served, "/pause r1", token=None).status == 401
    assert post_json(served, "/pause r1", "user-secret-token-1").status == 200
    assert paused(run_root)


# -- headers -------------------------------------------------------------------------------------------------


def test_security_headers(run_root, serve):
    served = serve(run_root)
    for path in ("/", "/app.js", "/api/runs", "/api/nothing", "/api/run?id=../.."):
        r = http(served.port, "GET", path)
        h = r.headers
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), path
        assert h.get("x-frame-options") == "DENY", path
        assert h.get("referrer-policy") == "no-referrer", path
        assert h.get("x-content-type-options") == "nosniff", path
        assert "python" not in h.get("server", "").lower(), h.get("server")
    r = http(served.port, "PUT", "/api/chat")  # not a method the server speaks: still no version shown
    assert "python" not in r.headers.get("server", "").lower()


# -- bad Content-Length and bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", " ", "99999999999999999999"])
def test_invalid_content_length_is_a_prompt_400(run_root, serve, length):
    served = serve(run_root, timeout=2.0)
    token = served.page_token()
    headers = {"Content-Type": "application/json", "Origin": served.origin, "X-Activesynth-Token": token}
    r = http(served.port, "POST", "/api/chat", headers, _pause_body(), content_length=length, timeout=8)
    assert r.status in (400, 413), r.text
    assert r.seconds < 5
    assert not paused(run_root)


def test_content_length_larger_than_the_body_does_not_hang(run_root, serve):
    served = serve(run_root, timeout=1.0)
    token = served.page_token()
    headers = {"Content-Type": "application/json", "Origin": served.origin, "X-Activesynth-Token": token}
    body = _pause_body()
    # the client promises more and keeps the connection open: the handler gives up after its timeout
    r = http(served.port, "POST", "/api/chat", headers, body, content_length=str(len(body) + 100),
             timeout=8, keep_open=True)  # fmt: skip
    assert r.seconds < 5, r.seconds
    assert r.status == 408, r.text
    # the client closes early instead: a prompt 400
    r = http(served.port, "POST", "/api/chat", headers, body, content_length=str(len(body) + 100), timeout=8)
    assert r.status == 400 and r.seconds < 5
    assert not paused(run_root)
    assert http(served.port, "GET", "/api/runs").status == 200  # the server still answers


def test_huge_body_is_a_413(run_root, serve):
    served = serve(run_root, timeout=2.0)
    token = served.page_token()
    headers = {"Content-Type": "application/json", "Origin": served.origin, "X-Activesynth-Token": token}
    r = http(
        served.port, "POST", "/api/chat", headers, b"", content_length="50000000", timeout=8, keep_open=True
    )
    assert r.status == 413 and r.seconds < 5


def test_request_line_timeout(run_root, serve):
    """A client that connects and sends nothing does not keep a handler thread forever."""
    import socket
    import time

    served = serve(run_root, timeout=1.0)
    with socket.create_connection(("127.0.0.1", served.port), timeout=8) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /api/runs HTTP/1.1\r\n")  # never finishes the headers
        while s.recv(4096):
            pass
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[1, 2]", "object"),
        (b'"/pause r1"', "object"),
        (b"null", "object"),
        (b"{}", "text"),
        (b'{"text": 5}', "text"),
        (b'{"text": ["/pause r1"]}', "text"),
        (b"{not json", "JSON"),
        (b"\xff\xfe", "JSON"),
        (b"", "empty"),
    ],
)
def test_bad_json_bodies_are_a_clear_400(run_root, serve, body, needle):
    served = serve(run_root)
    token = served.page_token()
    headers = {"Content-Type": "application/json", "Origin": served.origin, "X-Activesynth-Token": token}
    r = http(served.port, "POST", "/api/chat", headers, body)
    assert r.status == 400, r.text
    err = json.loads(r.body)["error"]
    assert needle.lower() in err.lower() and "\n" not in err
    assert not paused(run_root)


# -- the run store: symlinks and paths -----------------------------------------------------------------------


@pytest.fixture
def linked_root(run_root, tmp_path, small_files, embed_cache):
    """The store plus a link to a run outside it, a dangling link and a link back to the store itself."""
    from activesynth.agent.config import RunConfig
    from activesynth.agent.runs import Run
    from tests.chat.conftest import tiny_config

    outside = tmp_path / "outside"
    Run.create(outside / "theirs", RunConfig.model_validate(tiny_config(small_files, embed_cache)))
    os.symlink(outside, run_root / "elsewhere")
    os.symlink(outside / "theirs", run_root / "their-run")
    os.symlink(tmp_path / "gone", run_root / "dangling")
    os.symlink(run_root, run_root / "loop")
    return run_root


def _no_paths(text: str, *paths) -> None:
    for p in paths:
        assert str(p) not in text, text
    assert not re.search(r"(?<![\w.:/])/(tmp|home|root|work|var|etc)/", text), text


def test_symlinks_in_the_root_are_skipped(linked_root, serve, tmp_path):
    served = serve(linked_root)
    r = http(served.port, "GET", "/api/runs")
    assert r.status == 200, r.text
    ids = [x["id"] for x in json.loads(r.body)["runs"]]
    assert ids == ["r1"]
    from activesynth.agent.chat.session import ChatSession

    reply = ChatSession(linked_root, model=None).handle("/runs")
    assert "r1" in reply and not reply.startswith("error"), reply
    _no_paths(reply, tmp_path)


def test_error_bodies_show_no_absolute_paths(linked_root, serve, tmp_path):
    served = serve(linked_root)
    token = served.page_token()
    for path in (
        "/api/run?id=their-run", "/api/run?id=elsewhere/theirs", "/api/run?id=../..", "/api/run?id=nope",
        "/api/run?id=dangling", f"/api/run?id={tmp_path}", "/api/samples?id=r1&round=x", "/api/samples?id=r1",
        "/api/plot?id=r1&path=config.yaml", "/api/prompt?id=their-run&ref=x", "/api/nothing",
    ):  # fmt: skip
        r = http(served.port, "GET", path)
        assert r.status in (400, 404), (path, r.status, r.text)
        _no_paths(r.text, tmp_path, linked_root)
    for text in ("/status their-run", "/status elsewhere/theirs", "/report r1", "/prompts dangling"):
        r = post_json(served, text, token)
        assert r.status == 200
        _no_paths(r.text, tmp_path, linked_root)


def test_missing_root_is_one_clear_error(tmp_path):
    from activesynth.agent.web.server import ServeError, make_server

    missing = tmp_path / "no-such-folder"
    with pytest.raises(ServeError, match="no-such-folder") as err:
        make_server(missing, "127.0.0.1", 0)
    assert "\n" not in str(err.value)
    assert not missing.exists()
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(ServeError):
        make_server(afile, "127.0.0.1", 0)
