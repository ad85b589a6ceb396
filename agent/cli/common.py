"""What every command shares: the one error printer, the one logging setup, the data options, and how
flags become dotted config changes (``--budget 50`` is ``loop.budget=50``; ``--set KEY=VALUE`` takes any key).

Heavy libraries are imported inside commands, so ``activesynth --help`` is instant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = [
    "DataOptions",
    "Fail",
    "changes_from",
    "fail",
    "int_list",
    "open_run",
    "progress_printer",
    "setup_logging",
]

# -- options shared by several commands (one style: Annotated) ------------------------------------------
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Built-in dataset (see `activesynth datasets`).")
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="One labelled file that we split (seeded, stratified).")
]
TrainOpt = Annotated[Path | None, typer.Option("--train", help="Labelled training file.")]
DevOpt = Annotated[
    Path | None, typer.Option("--dev", help="Labelled dev file (uncertainty, model selection).")
]
PoolOpt = Annotated[
    Path | None, typer.Option("--pool", help="Unlabelled texts, also scored for uncertainty.")
]
TestOpt = Annotated[Path | None, typer.Option("--test", help="Held-out labelled file (final metrics only).")]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="Column or JSON key with the text.")]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="Column or JSON key with the label.")]
ShotsOpt = Annotated[int | None, typer.Option("--shots", min=1, help="Training texts per class (seeded).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for sampling, splitting and models.")]
PiiOpt = Annotated[
    bool | None, typer.Option("--pii-scrub/--no-pii-scrub", help="Scrub personal data from real texts.")
]
SelectionOpt = Annotated[
    float | None,
    typer.Option("--selection-fraction", help="Share of dev kept apart for model selection (default 0.5)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any setting as KEY=VALUE with a dotted key (e.g. filter.rouge_l.max_f=0.8)."),
]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder (runs/<id>).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]


class Fail(Exception):
    """Raised inside a command to end it with one error line (see :func:`fail`)."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <first line of message>`` on stderr and exit with ``code``; the only error printer."""
    from rich.console import Console
    from rich.markup import escape

    line = (str(message).strip().splitlines() or [""])[0]
    # escaped: messages carry literal brackets (e.g. "pip install 'active-synthesis[mlflow]'")
    Console(stderr=True).print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    """INFO with ``--verbose``, else warnings only; the only logging setup of the CLI."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def int_list(flag: str, value: str, low: int) -> list[int]:
    """A comma-separated integer option (``--seeds 0,1,2``); a bad value is a one-line error."""
    try:
        xs = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        xs = []
    if not xs or min(xs) < low:
        fail(f"--{flag}: expected comma-separated integers >= {low}, got '{value}'")
    return xs


def changes_from(flags: dict[str, Any], sets: list[str] | None = None) -> dict[str, Any]:
    """Dotted config changes from ``{"loop.budget": value_or_None, ...}`` (None: not given) and ``--set``
    assignments; a malformed ``--set`` is a one-line error."""
    from activesynth.agent.config import ConfigError, parse_assignment

    out = {k: v for k, v in flags.items() if v is not None}
    for text in sets or []:
        try:
            key, value = parse_assignment(text)
        except ConfigError as e:
            fail(f"--set: {e}")
        out[key] = value
    return out


class DataOptions:
    """The data options of a command (``--dataset`` or files, columns, shots, seed, PII, selection)."""

    def __init__(
        self,
        dataset=None,
        data=None,
        train=None,
        dev=None,
        pool=None,
        test=None,
        text_column=None,
        label_column=None,
        shots=None,
        seed=None,
        pii_scrub=None,
        selection_fraction=None,
    ) -> None:
        self.sources = {
            "dataset": dataset,
            "data": data,
            "train": train,
            "dev": dev,
            "pool": pool,
            "test": test,
        }
        self.settings = {
            "text_column": text_column,
            "label_column": label_column,
            "shots": shots,
            "seed": seed,
            "pii_scrub": pii_scrub,
            "selection_fraction": selection_fraction,
        }

    @property
    def given(self) -> bool:
        """True when the command line names a data source."""
        return any(v is not None for v in self.sources.values())

    def config(self, base=None):
        """A validated RunConfig: ``base`` (from --config) with its data section replaced when the command
        line names a source, then the data settings given; one-line error when invalid."""
        from activesynth.agent.config import ConfigError, DataConfig, RunConfig, override

        try:
            if base is None or self.given:
                data = DataConfig(**{k: v for k, v in self.sources.items() if v is not None})
                base = RunConfig(data=data) if base is None else base.model_copy(update={"data": data})
            return override(base, {f"data.{k}": v for k, v in self.settings.items() if v is not None})
        except ConfigError as e:
            fail(str(e))
        except ValueError as e:  # DataConfig's own check (one source, no data)
            fail(_pydantic_line(e))


def _pydantic_line(e: ValueError) -> str:
    from activesynth.agent.config import describe

    return describe(e) if hasattr(e, "errors") else str(e)


def apply(config, changes: dict[str, Any]):
    """``override(config, changes)`` with a one-line error."""
    from activesynth.agent.config import ConfigError, override

    try:
        return override(config, changes)
    except ConfigError as e:
        fail(str(e))


def open_run(path: Path):
    """An existing run folder, or a one-line error."""
    from activesynth.agent.runs import Run, RunError

    try:
        return Run.open(path)
    except RunError as e:
        fail(str(e))


def progress_printer(console, status) -> Callable[[str], None]:
    """A progress callback that shows the message in a live status line and logs it."""

    def progress(msg: str) -> None:
        status.update(msg)
        console.log(msg, markup=False, highlight=False)

    def show(msg: str) -> None:  # progress lines of a long stage: the live status line, and the log when
        status.update(msg)  # the output is not a terminal (the lines come about every 10 s)
        if not console.is_terminal:
            console.log(msg, markup=False, highlight=False)

    progress.show = show  # type: ignore[attr-defined]  # see activesynth.agent.progress
    return progress
