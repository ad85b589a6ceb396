"""Run control: the messages that steer a run while another process works on it (stop, pause, batch
approvals, changes for the next round). They live in the run's ``state.sqlite`` (key/value state, one SQLite
transaction each), which is the only thing a controller writes into a busy run: the worker that holds the
run's lock polls them between stages and applies them. The chat, the web page and the CLI are faces on top.

Keys: ``control.stop`` (``{"reason", "ts"}`` or null), ``control.pause`` (bool), ``control.approvals``
(``{"NN": {"approved", "note", "ts"}}``), ``control.overrides`` (dotted settings, ``{"loop.budget": 50}``).
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from activesynth.agent.config import RunConfig, override
from activesynth.agent.runs import Run

__all__ = [
    "StopRequested",
    "apply_overrides",
    "approvals",
    "clear_stop",
    "is_approved",
    "pending_overrides",
    "request_pause",
    "request_resume",
    "request_stop",
    "set_approval",
    "set_overrides",
    "should_pause",
    "should_stop",
    "wait_while_paused",
]


class StopRequested(RuntimeError):
    """Raised by a worker's progress hook when a stop was requested."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def should_stop(run: Run) -> bool:
    """True once someone asked this run to stop (the loop should end after the current stage)."""
    return bool(run.get_state("control.stop"))


def should_pause(run: Run) -> bool:
    """True while this run is paused (the loop should wait before starting the next stage)."""
    return bool(run.get_state("control.pause", False))


def request_stop(run: Run, reason: str = "stopped from chat") -> None:
    run.set_state("control.stop", {"reason": reason, "ts": _now()})
    run.set_state("control.pause", False)
    run.log_event("control", f"stop requested: {reason}")


def clear_stop(run: Run) -> None:
    run.set_state("control.stop", None)


def request_pause(run: Run) -> None:
    run.set_state("control.pause", True)
    run.log_event("control", "pause requested")


def request_resume(run: Run) -> None:
    run.set_state("control.pause", False)
    run.log_event("control", "resume requested")


def wait_while_paused(run: Run, poll_s: float = 1.0) -> bool:
    """Block while the run is paused; False when a stop arrives meanwhile, True otherwise."""
    while should_pause(run):
        if should_stop(run):
            return False
        time.sleep(poll_s)
    return not should_stop(run)


def approvals(run: Run) -> dict[str, dict]:
    return run.get_state("control.approvals", {}) or {}


def set_approval(run: Run, round_: int, approved: bool, note: str = "") -> dict:
    """Record a human decision on round ``round_``'s accepted batch."""
    data = approvals(run)
    data[f"{round_:02d}"] = {"approved": approved, "note": note, "ts": _now()}
    run.set_state("control.approvals", data)
    run.log_event("control", f"batch {'approved' if approved else 'rejected'}: {note}".rstrip(": "), round_)
    return data[f"{round_:02d}"]


def is_approved(run: Run, round_: int) -> bool | None:
    """The human decision on round ``round_``'s batch: True, False, or None when nobody decided yet."""
    entry = approvals(run).get(f"{round_:02d}")
    return None if entry is None else bool(entry["approved"])


def pending_overrides(run: Run) -> dict[str, Any]:
    """Dotted settings waiting for the next round (``{"loop.budget": 50}``)."""
    return dict(run.get_state("control.overrides", {}) or {})


def set_overrides(run: Run, changes: dict[str, Any]) -> dict[str, Any]:
    """Check dotted ``changes`` against the strict config with the pending ones, then queue them for the next
    round; raises :class:`~activesynth.agent.config.ConfigError` (one line) on a bad key or value."""
    pending = {**pending_overrides(run), **changes}
    override(run.config, pending)
    run.set_state("control.overrides", pending)
    run.log_event("control", f"config for the next round: {pending}")
    return pending


def apply_overrides(run: Run) -> RunConfig:
    """``run.config`` with the pending changes applied (a new, validated config)."""
    pending = pending_overrides(run)
    return override(run.config, pending) if pending else run.config
