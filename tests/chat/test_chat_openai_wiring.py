"""The real wiring: ``ChatOpenAI`` (from the ACTIVESYNTH_CHAT_* variables) + ``create_agent`` against a local
stub of an OpenAI-compatible server that answers with a tool call, then with text. Also: the chat modules
import no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("langchain_openai", reason="pip install langchain-openai")


class _Stub(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *a):
        return None

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"auth": self.headers.get("Authorization"), "body": body})
        last = body["messages"][-1]
        if last["role"] == "tool":
            message = {"role": "assistant", "content": "Runs: " + last["content"][:300]}
            finish = "stop"
        else:
            call = {"id": "call_1", "type": "function", "function": {"name": "list_runs", "arguments": "{}"}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        out = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_chat_openai_agent_calls_a_tool(tiny_store, monkeypatch):
    from activesynth.agent.chat.session import ChatSession

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stub.requests = []
    monkeypatch.setenv("ACTIVESYNTH_CHAT_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("ACTIVESYNTH_CHAT_MODEL", "stub-model")
    monkeypatch.setenv("ACTIVESYNTH_CHAT_API_KEY_ENV", "STUB_KEY")
    monkeypatch.setenv("STUB_KEY", "sk-stub-0123456789abcdef")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        s = ChatSession(tiny_store)
        reply = s.handle("which runs do I have?")
    finally:
        server.shutdown()
        server.server_close()
    assert reply.startswith("Runs: run | dataset") and "tiny" in reply
    first = _Stub.requests[0]
    assert first["auth"] == "Bearer sk-stub-0123456789abcdef"  # the key travels only to the server
    assert first["body"]["messages"][0]["role"] == "system"
    names = {t["function"]["name"] for t in first["body"]["tools"]}
    assert {"list_runs", "start_run", "stop_run", "edit_prompt", "set_config"} <= names
    assert len(_Stub.requests) == 2 and "sk-stub" not in reply


def test_chat_modules_import_no_heavy_library():
    code = (
        "import sys, activesynth.agent.chat.session, activesynth.agent.chat.tools, "
        "activesynth.agent.chat.manager, activesynth.agent.web.server, activesynth.agent.cli.chat\n"
        "heavy = [m for m in ('torch', 'langchain', 'langchain_core', 'openai', 'playwright', 'gradio') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
