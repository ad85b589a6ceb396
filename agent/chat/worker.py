"""``python -m activesynth.agent.chat.worker RUN_FOLDER``: run (or resume) a run's loop in the background."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m activesynth.agent.chat.worker RUN_FOLDER", file=sys.stderr)
        return 2
    import signal

    from activesynth.agent.chat.manager import work
    from activesynth.agent.control import StopRequested

    def on_term(signum, frame):  # a terminated worker records the run as stopped
        raise StopRequested

    signal.signal(signal.SIGTERM, on_term)
    state = work(Path(args[0]))
    print(f"run finished: {state}")
    return 0 if state in ("done", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
