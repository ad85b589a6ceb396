"""Slash commands: the same tools without a chat model (``/runs``, ``/start banking77 --shots 10``, …)."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from activesynth.agent.chat.tools import ToolBox

__all__ = ["HELP", "run_command"]

HELP = """Commands (RUN defaults to the current run):
  /runs                                   list runs
  /use RUN                                make RUN the current run
  /start DATASET [--shots K] [--budget N] [--rounds R] [--arm active|untargeted|real-only]
         [--seed S] [--id NAME]
  /start --config FILE.yaml [--id NAME]   start from a config file in the run store
  /status [RUN]                           state and latest progress
  /report [RUN] [--round N]               uncertainty report
  /cluster ID [--run RUN] [--round N]     one cluster with examples
  /samples [accepted|rejected|all] [--run RUN] [--round N] [--label L] [--limit N]
  /prompts [RUN]                          prompt versions kept in the run
  /edit-prompt NAME [--run RUN]           then the new template text on the following lines
  /set KEY=VALUE ... [--run RUN]          next-round config, e.g. /set loop.budget=50
  /approve [ROUND] [--note TEXT] [--run RUN]    /reject [ROUND] [--note TEXT] [--run RUN]
  /pause [RUN]   /resume [RUN]   /stop [RUN]
  /compare RUN_A RUN_B
  /help"""

_INT = {"shots", "budget", "rounds", "seed", "round", "limit"}


def _parse(tokens: list[str]) -> tuple[list[str], dict[str, object]]:
    pos: list[str] = []
    opts: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("--"):
            key = t[2:].replace("-", "_")
            if i + 1 >= len(tokens):
                raise ValueError(f"{t} needs a value")
            val: object = tokens[i + 1]
            if key in _INT:
                try:
                    val = int(str(val))
                except ValueError:
                    raise ValueError(f"{t} needs a whole number") from None
            opts[key] = val
            i += 2
        else:
            pos.append(t)
            i += 1
    return pos, opts


def _run_opt(opts: dict, pos: list[str] | None = None) -> dict:
    rid = opts.pop("run", None) or (pos[0] if pos else None)
    return {"run_id": rid} if rid else {}


def run_command(box: ToolBox, text: str) -> str:
    """Run one slash command against ``box``; returns the reply text."""
    head, _, body = text.lstrip().partition("\n")
    try:
        tokens = shlex.split(head)
    except ValueError as e:
        return f"error: {e}"
    cmd, rest = tokens[0].lower(), tokens[1:]
    try:
        pos, opts = _parse(rest)
    except ValueError as e:
        return f"error: {e}"
    handler = _HANDLERS.get(cmd)
    if handler is None:
        return f"unknown command {cmd}\n\n{HELP}"
    try:
        return handler(box, pos, opts, body)
    except ValueError as e:
        return f"error: {e}"


def _start(box, pos, opts, body):
    args = {"run_id": opts.pop("id", None), **opts}
    if pos:
        args["dataset"] = pos[0]
    return box.call("start_run", {k: v for k, v in args.items() if v is not None})


def _use(box, pos, opts, body):
    if not pos:
        return f"current run: {box.current or '(none)'}"
    box.store.resolve(pos[0])
    box.current = pos[0]
    return f"current run: {pos[0]}"


def _samples(box, pos, opts, body):
    args = _run_opt(opts)
    if pos:
        args["kind"] = pos[0]
    return box.call("show_samples", {**args, **opts})


def _cluster(box, pos, opts, body):
    if not pos or not pos[0].isdigit():
        return "usage: /cluster ID [--run RUN] [--round N]"
    return box.call("show_cluster", {**_run_opt(opts), "cluster_id": int(pos[0]), **opts})


def _edit(box, pos, opts, body):
    if not pos or not body.strip():
        return "usage: /edit-prompt NAME [--run RUN], then the new template text on the following lines"
    return box.call("edit_prompt", {**_run_opt(opts), "name": pos[0], "source": body})


def _set(box, pos, opts, body):
    from activesynth.agent.config import ConfigError, parse_assignment

    if not pos:
        return "usage: /set KEY=VALUE ... e.g. /set loop.budget=50 filter.rouge_l.max_f=0.8"
    try:
        changes = dict(parse_assignment(p) for p in pos)
    except ConfigError as e:
        return f"error: {e}"
    return box.call("set_config", {**_run_opt(opts), "changes": changes})


def _decide(approved: bool):
    def handler(box, pos, opts, body):
        args = _run_opt(opts)
        if pos:
            if not pos[0].isdigit():
                return "usage: /approve [ROUND] [--note TEXT] [--run RUN]"
            args["round"] = int(pos[0])
        return box.call("approve_batch", {**args, "approved": approved, "note": str(opts.get("note", ""))})

    return handler


def _simple(tool: str):
    def handler(box, pos, opts, body):
        return box.call(tool, {**_run_opt(opts, pos), **opts})

    return handler


def _compare(box, pos, opts, body):
    if len(pos) != 2:
        return "usage: /compare RUN_A RUN_B"
    return box.call("compare_runs", {"run_a": pos[0], "run_b": pos[1]})


_HANDLERS: dict[str, Callable[..., str]] = {
    "/help": lambda box, pos, opts, body: HELP,
    "/runs": lambda box, pos, opts, body: box.call("list_runs"),
    "/use": _use,
    "/start": _start,
    "/status": _simple("run_status"),
    "/report": _simple("show_report"),
    "/cluster": _cluster,
    "/samples": _samples,
    "/prompts": _simple("list_prompts"),
    "/edit-prompt": _edit,
    "/set": _set,
    "/approve": _decide(True),
    "/reject": _decide(False),
    "/pause": _simple("pause_run"),
    "/resume": _simple("resume_run"),
    "/stop": _simple("stop_run"),
    "/compare": _compare,
}
