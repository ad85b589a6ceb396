"""The ground floor of every setting: the strict base model, one way to apply dotted overrides, one way to
say what is wrong with a config, and URLs that cannot carry secrets.

``override(config, {"filter.rouge_l.max_f": 0.8})`` is the only place where the CLI (``--set``), the chat
(``/set``) and the web page change a config; values may be given as text (``"0.8"``, ``"true"``, ``"[a, b]"``)
and are read as YAML scalars. A change of a section's ``kind`` (``generate.backend.kind=openai``) starts that
section afresh from the new kind's defaults before the other keys apply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

__all__ = [
    "ConfigError",
    "PublicUrl",
    "StrictModel",
    "describe",
    "override",
    "parse_assignment",
    "public_command",
    "public_url",
]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

_SECRET_PARAM = re.compile(r"(key|token|secret|passw|pwd|auth|sig|credential|session)", re.I)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the setting (``loop.budget: ...``)."""


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line for a pydantic error: the dotted setting it concerns and what is wrong with it."""
    parts = []
    for err in error.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
        loc = ".".join(x for x in (prefix, loc) if x)
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "union_tag_not_found":
            msg = f"say which kind first ({loc + '.' if loc else ''}kind)"
        elif err["type"] in ("model_type", "dict_type") and not loc:
            msg = f"expected a mapping of sections, got {type(err.get('input')).__name__}"
        else:
            msg = str(err.get("ctx", {}).get("error", err["msg"])).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"loop.budget=50"`` -> ``("loop.budget", 50)``; the value is read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ConfigError(f"expected KEY=VALUE with a dotted key such as loop.budget=50, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def override(config: M, changes: Mapping[str, Any]) -> M:
    """A validated copy of ``config`` with dotted ``changes`` applied; None values are set as None.

    Raises :class:`ConfigError` (one line naming the setting) on an unknown key or a bad value.
    """
    data = config.model_dump(mode="json")
    # a new kind first, so that the other keys of that section land on the new kind's defaults
    for key in sorted(changes, key=lambda k: not k.endswith(".kind")):
        if not _KEY.fullmatch(key):
            raise ConfigError(f"bad setting name {key!r}")
        *parents, leaf = key.split(".")
        node = data
        for depth, name in enumerate(parents):
            child = node.get(name) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict) and name in node:
                child = node[name] = {}  # an optional section that is unset (None): set it up
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"{where}: unknown section" if child is None else f"{where}: not a section")
            node = child
        value = changes[key]
        if leaf == "kind" and node.get("kind") != value:
            node.clear()
        node[leaf] = value
    try:
        return type(config).model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe(e)) from None


def public_url(url: str | None, warn: bool = True) -> str | None:
    """``url`` without user name, password or secret-looking query parameters (``api_key``, ``token``…).

    Credentials never belong in a config: it is written to ``config.yaml``, ``run.json`` and tracking stores.
    A removed part is logged once as a warning that says where a key belongs instead.
    """
    if not url:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not _SECRET_PARAM.search(k)]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc == parts.netloc and len(kept) == len(query):
        return url
    if warn:
        log.warning(
            "removed credentials from a URL (%s://%s%s); keys never go into a config: put the key in an "
            "environment variable and name it with --api-key-env",
            parts.scheme,
            netloc,
            parts.path,
        )
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment))


def public_command(argv: list[str]) -> list[str]:
    """A command line fit to record (``run.json``): URLs without credentials, and the value of any option
    named like a secret (``--token``, ``--password``, ``--api-key``; not ``--api-key-env``) masked."""
    out: list[str] = []
    secret_next = False
    for arg in argv:
        name, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        secret = bool(name) and _SECRET_PARAM.search(name) and not name.endswith("-env")
        if secret_next or (secret and eq):
            value = "***"
        elif "://" in value:
            value = public_url(value, warn=False) or value
        out.append(f"{name}={value}" if eq else value if not name else arg)
        secret_next = bool(secret and not eq)
    return out


PublicUrl = Annotated[str, AfterValidator(public_url)]
"""A URL field that drops credentials on validation (see :func:`public_url`)."""
