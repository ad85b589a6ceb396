"""The one scripted stand-in for an LLM backend, for fast tests of logic (never the only test of a path: real
backends are tested against a real server on loopback and the real local model).

``ScriptedBackend(answer)`` implements the backend protocol; ``answer(request, sample_index, n_call)`` returns
the text (or a ready :class:`Result`) of one sample. ``calls`` counts samples asked for, ``asked`` lists
``(request id, sample index)`` in order. Ready-made answers: :func:`echo` (continues a list prompt with an
edited copy of one of its example lines, like a small base model would).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

from activesynth.agent.llm.protocol import GenerationRequest, Result

Answer = Callable[[GenerationRequest, int, int], "str | Result"]


def echo(req: GenerationRequest, i: int, n_call: int) -> Result:
    """An edited copy of one of the prompt's list lines, seeded by request and sample."""
    text = req.prompt or "\n".join(c for _, c in req.messages or ())
    lines = [m.group(1).strip() for m in re.finditer(r"^\s*(?:\d+[.)]|-)\s*(.+)$", text, re.M)]
    lines = [x for x in lines if len(x) > 8] or ["I need help with my account please"]
    rng = random.Random(f"{req.id}-{i}")
    words = rng.choice(lines).split()
    prefix = rng.choice(["Hey,", "Quick question:", "Hello there,", "Sorry to bother you,"])
    tail = rng.choice(["thanks!", "any idea?", "please advise.", "what should I do?"])
    gen = f" {prefix} {' '.join(words)} {tail}\n"
    return Result(req.id, i, gen, "stop", prompt_tokens=len(text.split()), completion_tokens=len(words))


class ScriptedBackend:
    """A backend whose every sample comes from ``answer``; see the module docstring."""

    name = "scripted"

    def __init__(
        self,
        answer: Answer = echo,
        model_id: str = "scripted-echo",
        delay: float = 0.0,
        log_path=None,
        fail_after: int | None = None,
    ) -> None:
        self.answer = answer
        self.model_id = model_id
        self.delay = delay
        self.log_path = log_path
        self.fail_after = fail_after
        self.asked: list[tuple[str, int]] = []

    @property
    def calls(self) -> int:
        return len(self.asked)

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass

    def generate(self, requests, on_result=None) -> list[Result]:
        out = []
        for req in requests:
            for i in req.sample_indices():
                if self.fail_after is not None and self.calls >= self.fail_after:
                    raise KeyboardInterrupt("killed")
                self.asked.append((req.id, i))
                if self.delay:
                    time.sleep(self.delay)
                if self.log_path:
                    with open(self.log_path, "a") as f:
                        f.write(f"{req.id} {i}\n")
                res = self.answer(req, i, self.calls)
                if isinstance(res, str):
                    res = Result(
                        req.id, i, text=res, finish_reason="stop", prompt_tokens=3, completion_tokens=2
                    )
                out.append(res)
                if on_result:
                    on_result(req, res)
        return out


class EchoBackend(ScriptedBackend):
    """The scripted generator of the loop tests: :func:`echo` answers."""

    def __init__(self, delay: float = 0.0, log_path=None) -> None:
        super().__init__(echo, "scripted-echo", delay=delay, log_path=log_path)
