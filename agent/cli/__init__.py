"""The ``activesynth`` command line, one module per noun: ``datasets``, ``report``, ``run`` (and
``efficiency``), ``runs`` (``runs``, ``compare``, ``predict``), ``generate``, ``prompts``, ``filter``,
``chat`` (``chat``, ``serve``). Every module adds its commands to :data:`app`; :mod:`.common` holds what
they share."""

from activesynth.agent.cli import chat, datasets, filters, generate, prompts, report, run, runs  # noqa: F401
from activesynth.agent.cli.app import app, main

__all__ = ["app", "main"]
