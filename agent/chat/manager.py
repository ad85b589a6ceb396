"""Background runs: each run works in its own process (``python -m activesynth.agent.chat.worker RUN``)
or, for tests and scripted generators, in a thread. The worker's progress hook writes every progress line to
the run's event log, waits while the run is paused and stops between stages when a stop was requested."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from activesynth.agent import control
from activesynth.agent.runs import Run

__all__ = ["RunManager", "work"]


def work(path: Path, backend=None) -> str:
    """Run (or resume) the loop of the run in ``path`` under its lock; returns the final state."""
    from activesynth.agent.loop import run_loop

    run = Run.open(path)
    control.clear_stop(run)
    with run.lock():
        pending = run.get_state("control.overrides", {}) or {}
        if pending:
            run.config = control.apply_overrides(run)
            run.log_event("control", f"applied config changes {pending}")
        run.update_record(state="running", overrides_applied=pending)
        run.log_event("start", f"worker pid {os.getpid()}")

        def progress(msg: str) -> None:
            run.log_event("progress", msg)
            if control.should_pause(run):
                run.update_record(state="paused")
                ok = control.wait_while_paused(run, 0.5)
                run.update_record(state="running")
                if not ok:
                    raise control.StopRequested
            if control.should_stop(run):
                raise control.StopRequested

        try:
            run_loop(run, progress, backend)
        except control.StopRequested:
            reason = (run.get_state("control.stop") or {}).get("reason", "stop requested")
            run.update_record(state="stopped", stop_reason=reason)
            run.log_event("stopped", reason)
            return "stopped"
        except Exception as e:  # noqa: BLE001 - recorded in the run, shown in chat
            run.update_record(state="failed", error=str(e).splitlines()[0][:300])
            run.log_event("error", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
            return "failed"
        return "done"


class RunManager:
    """Starts runs in the background and remembers the ones it started."""

    def __init__(self, mode: str = "process", backend=None) -> None:
        if mode not in ("process", "thread"):
            raise ValueError("mode must be 'process' or 'thread'")
        self.mode = mode
        self.backend = backend
        self.procs: dict[Path, subprocess.Popen] = {}
        self.threads: dict[Path, threading.Thread] = {}

    def launch(self, path: Path) -> str:
        path = Path(path).resolve()
        if self.alive(path) or Run.is_busy(path):
            return "already running"
        if self.mode == "thread":
            t = threading.Thread(target=work, args=(path, self.backend), daemon=True, name=f"run-{path.name}")
            self.threads[path] = t
            t.start()
            return "started (thread)"
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        log = open(path / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.procs[path] = subprocess.Popen(
                [sys.executable, "-m", "activesynth.agent.chat.worker", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        return f"started (pid {self.procs[path].pid})"

    def alive(self, path: Path) -> bool:
        path = Path(path).resolve()
        if path in self.procs:
            return self.procs[path].poll() is None
        if path in self.threads:
            return self.threads[path].is_alive()
        return False

    def wait(self, path: Path, timeout: float | None = None) -> None:
        path = Path(path).resolve()
        if path in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.procs[path].wait(timeout)
        elif path in self.threads:
            self.threads[path].join(timeout)

    def kill(self, path: Path) -> bool:
        """Terminate a worker process this manager started (a hard stop); False if none."""
        proc = self.procs.get(Path(path).resolve())
        if proc is None or proc.poll() is not None:
            return False
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        return True

    def shutdown(self) -> None:
        for path in list(self.procs):
            self.kill(path)
