"""``activesynth chat`` (terminal) and ``activesynth serve`` (web page): the same tools and agent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app

RootOpt = Annotated[Path, typer.Option("--root", help="Run store: the folder holding the run folders.")]


@app.command("chat")
def chat_cmd(root: RootOpt = Path("runs")) -> None:
    """Talk to your runs in the terminal: slash commands (/help), or words with a configured chat model."""
    import threading
    import time

    from activesynth.agent.chat.session import NO_MODEL, ChatSession

    session = ChatSession(root)
    print(f"Active Synthesis chat over {root}/ — /help for commands, Ctrl-D to leave.")
    if not session.has_model:
        print(NO_MODEL.splitlines()[0])
    stop = threading.Event()

    def follow() -> None:
        """Print new events of the current run while it works (live progress)."""
        seen: dict[str, int] = {}
        while not stop.wait(1.0):
            rid = session.box.current
            if not rid:
                continue
            try:
                events = session.store.events(rid, seen.get(rid, 0))
            except Exception:  # noqa: BLE001 - the run may be half-created
                continue
            if rid not in seen:
                seen[rid] = len(events) + (events[0]["i"] if events else 0)
                continue
            for e in events:
                print(f"\r  [{rid}] {e['stage']}: {e['message']}")
                seen[rid] = e["i"] + 1

    threading.Thread(target=follow, daemon=True).start()
    try:
        while True:
            try:
                text = input("you> ")
            except EOFError:
                break
            if text.strip() in ("/quit", "/exit"):
                break
            if text.strip().startswith("/edit-prompt"):
                print("  (template text; end with a line holding only '.')")
                lines = []
                while (line := input()) != ".":
                    lines.append(line)
                text = text + "\n" + "\n".join(lines) + "\n"
            reply = session.handle(text)
            if reply:
                print(reply)
            time.sleep(0.05)
    finally:
        stop.set()
        session.box.manager.shutdown()  # runs started here stop (resumable with /resume)


@app.command("serve")
def serve_cmd(
    root: RootOpt = Path("runs"),
    host: Annotated[
        str, typer.Option(help="Address to bind; other than loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    token: Annotated[
        str | None, typer.Option(help="Access token (or ACTIVESYNTH_SERVE_TOKEN); required off loopback.")
    ] = None,
) -> None:
    """Serve the chat panel and a live dashboard of the runs in ROOT."""
    from activesynth.agent.web.server import ServeError, make_server

    token = token or os.environ.get("ACTIVESYNTH_SERVE_TOKEN") or None
    try:
        server = make_server(root, host, port, token)
    except (ServeError, OSError) as e:
        c.fail(str(e))
    shown = f"http://{host}:{server.server_address[1]}/" + ("?token=<your token>" if token else "")
    typer.echo(f"Active Synthesis dashboard on {shown} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.session.box.manager.shutdown()
