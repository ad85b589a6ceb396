"""Usage accounting: calls, tokens, cache hits, seconds and money, per stage and model."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from activesynth.agent.files import write_atomic

__all__ = ["Price", "PriceTable", "UsageMeter", "UsageRow"]


class Price(BaseModel):
    """Price of one model in a currency unit per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_mtok: float = Field(0.0, ge=0, description="Price per million prompt (input) tokens.")
    completion_per_mtok: float = Field(0.0, ge=0, description="Price per million completion (output) tokens.")


class PriceTable(BaseModel):
    """Prices by model id (exact match, else the longest matching suffix such as the bare model name)."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field("USD", description="Currency of all prices.")
    models: dict[str, Price] = Field(default_factory=dict, description="Model id or name -> price.")

    def price_for(self, model_id: str) -> Price | None:
        if model_id in self.models:
            return self.models[model_id]
        matches = [k for k in self.models if model_id.endswith(k)]
        return self.models[max(matches, key=len)] if matches else None


@dataclass
class UsageRow:
    """Counters of one (stage, model)."""

    stage: str
    model: str
    calls: int = 0
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
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_hits: int = 0,
        failures: int = 0,
        seconds: float = 0.0,
    ) -> None:
        with self._lock:
            row = self._rows.setdefault((stage, model), UsageRow(stage=stage, model=model))
            row.calls += calls
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
        keys = ("calls", "prompt_tokens", "completion_tokens", "cache_hits", "failures", "seconds")
        totals: dict = {k: sum(getattr(r, k) for r in rows) for k in keys}
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
        keys = ("calls", "prompt_tokens", "completion_tokens", "cache_hits", "failures", "seconds")
        self.record(row["stage"], row["model"], **{k: row.get(k) or 0 for k in keys})

    @staticmethod
    def merge_files(paths: list[Path], out: Path) -> dict:
        """Sum several saved summaries (e.g. all rounds) into one run-level file."""
        acc: dict[tuple[str, str], dict] = {}
        currency = "USD"
        for p in paths:
            data = json.loads(Path(p).read_text())
            currency = data.get("currency", currency)
            for r in data["rows"]:
                cur = acc.setdefault(
                    (r["stage"], r["model"]), {**r, **{k: 0 for k in r if k not in ("stage", "model")}}
                )
                for k, v in r.items():
                    if k in ("stage", "model") or v is None:
                        continue
                    cur[k] = (cur[k] or 0) + v
        rows = list(acc.values())
        keys = ("calls", "prompt_tokens", "completion_tokens", "cache_hits", "failures", "seconds", "cost")
        totals = {k: sum((r.get(k) or 0) for r in rows) for k in keys}
        data = {"currency": currency, "rows": rows, "totals": totals}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
        return data
