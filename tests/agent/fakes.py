"""Scripted stand-ins for fast tests of logic (never the only test of a path)."""

import random
import re
import time

from activesynth.agent.llm.protocol import Result


class EchoBackend:
    """A scripted generator: continues a list prompt with an edited copy of one of its example lines."""

    name = "scripted"
    model_id = "scripted-echo"

    def __init__(self, delay: float = 0.0, log_path=None):
        self.calls = 0
        self.delay = delay
        self.log_path = log_path

    def check(self):
        pass

    def close(self):
        pass

    def generate(self, requests, on_result=None):
        out = []
        for req in requests:
            text = req.prompt or "\n".join(c for _, c in req.messages or ())
            lines = [m.group(1).strip() for m in re.finditer(r"^\s*(?:\d+[.)]|-)\s*(.+)$", text, re.M)]
            lines = [x for x in lines if len(x) > 8] or ["I need help with my account please"]
            for i in req.sample_indices():
                self.calls += 1
                if self.delay:
                    time.sleep(self.delay)
                if self.log_path:
                    with open(self.log_path, "a") as f:
                        f.write(f"{req.id} {i}\n")
                rng = random.Random(f"{req.id}-{i}")
                pick = rng.choice(lines)
                words = pick.split()
                prefix = rng.choice(["Hey,", "Quick question:", "Hello there,", "Sorry to bother you,"])
                tail = rng.choice(["thanks!", "any idea?", "please advise.", "what should I do?"])
                gen = f" {prefix} {' '.join(words)} {tail}\n"
                r = Result(
                    req.id, i, gen, "stop", prompt_tokens=len(text.split()), completion_tokens=len(words)
                )
                out.append(r)
                if on_result:
                    on_result(req, r)
        return out
