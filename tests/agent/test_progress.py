"""Progress lines of long stages: counts, bar, ETA from real work only, an interval between lines, and the
display-only twin of a progress callback."""

from __future__ import annotations

import pytest

from activesynth.agent.progress import Ticker, display_of, duration, prefixed


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_come_at_most_every_interval_and_at_the_end():
    clock, lines = Clock(), []
    t = Ticker(10, "generating", lines.append, every_s=10, unit="samples", clock=clock)
    for _ in range(4):
        clock.t += 2
        t.tick(tokens=20)
    assert len(lines) == 1  # the first unit, then quiet for 10 s
    assert lines[0].startswith("generating 1/10 samples [##..................] 10%")
    clock.t += 10
    t.tick(tokens=20)
    assert len(lines) == 2 and "5/10" in lines[1]
    assert "5.6 tok/s" in lines[1]  # 100 tokens in 18 s
    assert lines[1].endswith("ETA 18s")  # 5 done in 18 s, 5 left
    t.done("7 texts parsed")
    assert len(lines) == 3 and "7 texts parsed" in lines[2] and lines[2].endswith("took 18s")


def test_cache_hits_count_as_done_but_not_toward_the_rate():
    clock, lines = Clock(), []
    t = Ticker(100, "generating", lines.append, every_s=0, clock=clock)
    t.tick(n=50, cached=True)
    assert t.eta() is None and lines[-1].endswith("ETA ?") and "50 cached" in lines[-1]
    clock.t += 30
    t.tick(n=10, tokens=300)
    assert t.eta() == pytest.approx(30 / 10 * 40)  # 40 left at 10 per 30 s of real work
    assert "10.0 tok/s" in lines[-1]  # tokens of cached samples are not counted


def test_duration_and_empty_totals():
    assert [duration(x) for x in (0, 42.4, 130, 3900)] == ["0s", "42s", "2m10s", "1h05m"]
    lines = []
    t = Ticker(0, "filtering", lines.append)
    t.done()
    assert lines == ["filtering 0/0 [####################] · took 0s"]


def test_the_display_twin_survives_a_prefix():
    said, shown = [], []

    def say(msg):
        said.append(msg)

    say.show = shown.append
    p = prefixed(say, "[seed 0 active] ")
    p("round 1: starting")
    display_of(p)("generating 1/4")
    assert said == ["[seed 0 active] round 1: starting"]
    assert shown == ["[seed 0 active] generating 1/4"]
    assert display_of(prefixed(said.append, "x")) is None and display_of(None) is None
