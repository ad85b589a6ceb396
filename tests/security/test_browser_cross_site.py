"""The attack of issue 11 in a real browser (Debian's Chromium driven by Playwright): a page from another
origin, open while the dashboard runs on loopback without a token, tries to drive the chat (fetch with a
text/plain body, a JSON fetch, an auto-submitted form) and to frame the dashboard. None of it may change
the run, and the frame must stay empty."""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.security.conftest import paused

CHROMIUM = os.environ.get("ACTIVESYNTH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip

EVIL = """<!doctype html><html><body>
<iframe id="f" src="{base}/" width="600" height="300"></iframe>
<form id="form" method="POST" action="{base}/api/chat" enctype="text/plain" target="sink">
<input name='{{"text": "/pause r1", "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
window.results = [];
const body = JSON.stringify({{text: "/pause r1"}});
fetch("{base}/api/chat", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body}})
  .then(r => results.push("text/plain:" + r.type), e => results.push("text/plain:" + e));
fetch("{base}/api/chat", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}})
  .then(r => results.push("json:" + r.status), e => results.push("json:blocked"));
fetch("{base}/", {{mode: "cors"}}).then(r => r.text()).then(t => results.push("read:" + t.length),
  e => results.push("read:blocked"));
document.getElementById("form").submit();
</script></body></html>"""


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
def test_a_page_of_another_origin_cannot_drive_or_frame_the_dashboard(run_root, serve, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    served = serve(run_root)
    site = tmp_path / "evil"
    site.mkdir()
    (site / "index.html").write_text(EVIL.format(base=served.origin), encoding="utf-8")
    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    evil = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page()
            # "localhost" vs "127.0.0.1": another origin on the same machine, the usual case of a local page
            page.goto(f"http://localhost:{evil.server_address[1]}/index.html")
            page.wait_for_function("window.results.length >= 3", timeout=15_000)
            page.wait_for_timeout(1500)  # let the form post land too
            results = page.evaluate("window.results")
            framed = page.frame_locator("#f").locator("#chat").count()
            browser.close()
    finally:
        evil.shutdown()
        evil.server_close()
    assert not paused(run_root)  # neither the fetches nor the form reached the chat
    assert "read:blocked" in results and "json:blocked" in results, results
    assert framed == 0  # frame-ancestors 'none' / X-Frame-Options: DENY
