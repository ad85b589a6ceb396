"""The dashboard server: its API and token rule, and an end-to-end browser test (headless Chromium from
Debian's package, driven by Playwright) that chats, starts a tiny run and sees it finish with a plot."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from activesynth.agent.chat.manager import RunManager
from activesynth.agent.chat.session import ChatSession
from activesynth.agent.web.server import ServeError, make_server

CHROMIUM = os.environ.get("ACTIVESYNTH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get(
        "ACTIVESYNTH_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"
    )
)


def _serve(root, token=None, backend=None):
    session = ChatSession(root, manager=RunManager(mode="thread", backend=backend), model=None)
    server = make_server(root, "127.0.0.1", 0, token=token, session=session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_refuses_public_bind_without_token(tmp_path):
    with pytest.raises(ServeError, match="access token"):
        make_server(tmp_path, "0.0.0.0", 0, token=None, session=ChatSession(tmp_path, model=None))


def test_api(tiny_store):
    server, base = _serve(tiny_store, token="t0k")
    try:
        assert _get(base + "/api/runs")[0] == 401
        assert _get(base + "/api/runs?token=bad")[0] == 401
        code, body = _get(base + "/api/runs", {"X-Token": "t0k"})
        assert code == 200 and json.loads(body)["runs"][0]["id"] == "tiny"
        code, body = _get(base + "/api/run?id=tiny&token=t0k")
        view = json.loads(body)
        assert view["status"]["state"] == "done" and view["curves"]["series"][0]["points"]
        assert view["report"]["per_class"] and "round-01/plots/cluster_map.png" in view["plots"]
        code, body = _get(base + "/api/plot?id=tiny&path=round-01/plots/cluster_map.png&token=t0k")
        assert code == 200 and body[:4] == b"\x89PNG"
        assert _get(base + "/api/plot?id=tiny&path=config.yaml&token=t0k")[0] == 400
        assert _get(base + "/api/run?id=../..&token=t0k")[0] == 400
        code, body = _get(base + "/api/samples?id=tiny&kind=rejected&token=t0k")
        assert code == 200 and json.loads(body)["samples"][0]["reasons"]
        req = urllib.request.Request(
            base + "/api/chat",
            data=json.dumps({"text": "/status tiny"}).encode(),
            headers={"X-Activesynth-Token": "t0k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["reply"].startswith("run tiny: done")
        code, body = _get(base + "/")
        assert code == 200 and b'<script src="/app.js">' in body  # the page itself needs no token
        assert b"t0k" not in body  # and never carries the user's token
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
def test_browser_end_to_end(store_copy):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from tests.fakes import EchoBackend

    server, base = _serve(store_copy, backend=EchoBackend())  # scripted generator: a real round, fast
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/")

            def say(text: str, expect: str) -> None:
                n = page.locator(".msg.bot").count()
                page.fill("#msg", text)
                page.click("#send")
                page.locator(".msg.bot").nth(n).wait_for(timeout=15_000)
                assert expect in page.locator(".msg.bot").nth(n).inner_text()

            say("/status tiny", "run tiny: done")
            say("/start --config tiny.yaml --id web --budget 8", "run web: started")
            expect = sync_api.expect
            expect(page.locator("#status")).to_contain_text("web: done", timeout=50_000)
            curve = page.locator("#curves polyline.series")
            expect(curve).to_have_count(1)
            assert len(curve.get_attribute("points").split()) == 2  # round 0 (real only) and round 1
            expect(page.locator("#clustermap")).to_have_js_property("complete", True, timeout=10_000)
            assert page.locator("#clustermap").evaluate("e => e.naturalWidth") > 0
            status = page.inner_text("#status")
            assert "web: done" in status and "progress" in status
            assert page.locator("#rounds tr").count() >= 2
            page.select_option("#run", "tiny")
            page.click("#load")
            page.locator("#samples tr").nth(1).wait_for(timeout=10_000)
            assert "quality" in page.inner_text("#samples")
            page.select_option("#run", "web")
            expect(page.locator("#status")).to_contain_text("web: done")
            page.locator("#dash").evaluate("e => { e.scrollTop = 0; }")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat_dashboard.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        server.session.box.manager.shutdown()
