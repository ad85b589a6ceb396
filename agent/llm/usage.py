"""Usage accounting: calls, requests, tokens, cache hits, seconds and money, per stage and model.

``calls`` are the model calls the code made (one per prompt group sent, including re-asks for unusable
answers); ``requests`` are the HTTP requests (or local model runs) those calls took, so
``requests == calls + transport_retries`` always holds: a server's access log shows ``requests``.
``output_retries`` counts the calls that re-asked after an unusable answer (empty, malformed) or a failure
the transport retries gave up on.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from activesynth.agent.config.llm import Price, PriceTable
from activesynth.agent.files import write_atomic

__all__ = ["COUNTERS", "Price", "PriceTable", "UsageMeter", "UsageRow"]

COUNTERS = (
    "calls",
    "requests",
    "transport_retries",
    "output_retries",
    "prompt_tokens",
    "completion_tokens",
    "cache_hits",
    "failures",
    "seconds",
)
"""The summed fields of a :class:`UsageRow` (and of a summary's ``totals``, which adds ``cost``)."""


@dataclass
class UsageRow:
    """Counters of one (stage, model); see the module docstring for calls, requests and retries."""

    stage: str
    model: str
    calls: int = 0
    requests: int = 0
    transport_retries: int = 0
    output_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    failures: int = 0
    seconds: float = 0.0
    cost: float | None = None


class UsageMeter:
    """Thread-safe counters; ``summary()`` gives rows and totals, ``save()`` merges into a JSON file."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()
        self._rows: dict[tuple[str, str], UsageRow] = {}
        self._lock = threading.Lock()

    def record(
        self,
        stage: str,
        model: str,
        *,
        calls: int = 0,
        requests: int | None = None,
        output_retries: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_hits: int = 0,
        failures: int = 0,
        seconds: float = 0.0,
        transport_retries: int | None = None,
    ) -> None:
        """Add counts. ``requests`` defaults to ``calls`` (a backend without transport retries);
        ``transport_retries`` is ``requests - calls`` unless given (when adding up saved rows)."""
        if requests is None:
            requests = calls
        if transport_retries is None:
            transport_retries = max(0, requests - calls)
        with self._lock:
            row = self._rows.setdefault((stage, model), UsageRow(stage=stage, model=model))
            row.calls += calls
            row.requests += requests
            row.transport_retries += transport_retries
            row.output_retries += output_retries
            row.prompt_tokens += prompt_tokens
            row.completion_tokens += completion_tokens
            row.cache_hits += cache_hits
            row.failures += failures
            row.seconds += seconds

    def rows(self) -> list[UsageRow]:
        with self._lock:
            rows = [UsageRow(**asdict(r)) for r in self._rows.values()]
        for r in rows:
            price = self.prices.price_for(r.model)
            if price is not None:
                r.cost = round(
                    r.prompt_tokens * price.prompt_per_mtok / 1e6
                    + r.completion_tokens * price.completion_per_mtok / 1e6,
                    6,
                )
        return rows

    def summary(self) -> dict:
        rows = self.rows()
        totals: dict = {k: sum(getattr(r, k) for r in rows) for k in COUNTERS}
        totals["seconds"] = round(totals["seconds"], 3)
        costs = [r.cost for r in rows if r.cost is not None]
        totals["cost"] = round(sum(costs), 6) if costs else None
        return {"currency": self.prices.currency, "rows": [asdict(r) for r in rows], "totals": totals}

    def save(self, path: str | Path) -> dict:
        """Write this meter's summary to ``path`` (JSON) and return it."""
        data = self.summary()
        write_atomic(path, json.dumps(data, indent=2))
        return data

    def accumulate(self, path: str | Path) -> dict:
        """Add this meter's counts to the summary saved at ``path`` (if any) and save the sum there."""
        path = Path(path)
        total = UsageMeter(self.prices)
        if path.exists():
            for r in json.loads(path.read_text()).get("rows", []):
                total._add(r)
        for r in self.rows():
            total._add(asdict(r))
        return total.save(path)

    def _add(self, row: dict) -> None:
        row = _complete(row)
        self.record(row["stage"], row["model"], **{k: row[k] for k in COUNTERS})

    @staticmethod
    def merge_files(paths: list[Path], out: Path) -> dict:
        """Sum several saved summaries (e.g. all rounds) into one run-level file."""
        acc: dict[tuple[str, str], dict] = {}
        currency = "USD"
        for p in paths:
            data = json.loads(Path(p).read_text())
            currency = data.get("currency", currency)
            for r in map(_complete, data["rows"]):
                cur = acc.setdefault(
                    (r["stage"], r["model"]), {**r, **{k: 0 for k in r if k not in ("stage", "model")}}
                )
                for k, v in r.items():
                    if k in ("stage", "model") or v is None:
                        continue
                    cur[k] = (cur.get(k) or 0) + v
        rows = list(acc.values())
        totals = {k: sum((r.get(k) or 0) for r in rows) for k in (*COUNTERS, "cost")}
        data = {"currency": currency, "rows": rows, "totals": totals}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
        return data


def _complete(row: dict) -> dict:
    """A saved row with every counter; rows saved before ``requests`` was counted took one per call."""
    out = dict(row)
    for k in COUNTERS:
        out[k] = out.get(k) or 0
    if "requests" not in row:
        out["requests"] = out["calls"] + out["transport_retries"]
    return out
