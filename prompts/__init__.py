"""Prompt templates: Jinja2 files with a YAML header, rendered with ``StrictUndefined`` in Jinja's sandbox.

Each ``*.jinja2`` file starts with a Jinja comment holding YAML metadata::

    {#- ---
    mode: completion        # completion (base models) or chat (instruction models)
    family: list            # list | contrastive | evol_depth | evol_breadth
    description: ...
    stop: ["\n\n"]        # optional: where sampling stops (completion templates; extends the run's stops)
    --- -#}

The registry gives every template a name (the file stem), a mode, a family, its variables (found by parsing
the template) and a version: the sha256 of the file's bytes. A version is addressed as ``name@<sha12>``; runs
keep copies of the versions they used as ``<run>/prompts/<name>@<sha12>.jinja2`` (never overwritten), so a
reference like ``self_instruct_list@0123456789ab`` stays resolvable after the packaged file changes.

Chat templates split their text into messages with lines that read ``[[system]]``, ``[[user]]`` or
``[[assistant]]``.

Templates are data a teammate or the chat can edit, so they never run as trusted code: every parse and render
goes through one ``ImmutableSandboxedEnvironment`` (no attribute or item that starts with ``_``, no unsafe
callables such as ``str.format`` traversal or ``mro``, no mutation of lists and dicts), and a template that
names an internal attribute (``__class__``, ``_TemplateReference__context``, ``|attr('__globals__')``) or
includes, imports or extends another template is refused when it is loaded, whichever branch holds it. Every
failure is a one-line :class:`TemplateError`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGE_DIR",
    "PromptTemplate",
    "RenderedPrompt",
    "TemplateError",
    "get_template",
    "list_templates",
    "load_template",
    "snapshot",
]

PACKAGE_DIR = Path(__file__).resolve().parent
_HEADER = re.compile(r"\A\{#-?\s*---\s*\n(?P<yaml>.*?)\n---\s*-?#\}", re.DOTALL)
_ROLE_LINE = re.compile(r"^\[\[(system|user|assistant)\]\]\s*$", re.MULTILINE)
_MODES = ("completion", "chat")


class TemplateError(ValueError):
    """A template that cannot be found, parsed or rendered."""


@functools.cache
def _sandbox():
    """The one Jinja environment of the project: immutable sandbox, ``StrictUndefined``, no loader."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )


def _one_line(exc: BaseException) -> str:
    """A Jinja or Python error as one line (syntax errors with their line number)."""
    import jinja2

    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"line {exc.lineno}: {exc.message}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_tree(tree) -> None:
    """Refuse what the sandbox would only stop when (and if) the branch holding it runs."""
    from jinja2 import nodes

    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise TemplateError(f"line {node.lineno}: a template may not include, import or extend another one")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            name = node.args[0].value if isinstance(node.args[0], nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateError(
                f"line {node.lineno}: {name!r} is not allowed in the sandbox "
                "(names that start with '_' are internal)"
            )


@functools.lru_cache(maxsize=256)
def _compile(source: str):
    """``(jinja Template, variables)`` for ``source``, checked and compiled in the sandbox; raises
    :class:`TemplateError` with one line."""
    import jinja2
    import jinja2.meta

    env = _sandbox()
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(_one_line(exc)) from None
    _check_tree(tree)
    variables = tuple(sorted(jinja2.meta.find_undeclared_variables(tree)))
    try:
        return env.from_string(tree), variables
    except Exception as exc:  # noqa: BLE001 - any compile failure is the template's fault
        raise TemplateError(_one_line(exc)) from None


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt: a plain string (completion) or a list of chat messages."""

    mode: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None

    @property
    def text(self) -> str:
        """Human-readable form (messages joined with their roles)."""
        if self.mode == "completion":
            return self.prompt or ""
        return "\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or [])


@dataclass(frozen=True)
class PromptTemplate:
    """One template file and its metadata."""

    name: str
    mode: str
    family: str
    description: str
    version: str
    path: Path
    source: str = field(repr=False)
    variables: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()

    @property
    def sha12(self) -> str:
        return self.version[:12]

    @property
    def ref(self) -> str:
        """``name@sha12``: the stable address of this version."""
        return f"{self.name}@{self.sha12}"

    def render(self, **variables: Any) -> RenderedPrompt:
        """Render in the sandbox with ``StrictUndefined``; a missing variable, a refused construct or any
        error while rendering raises :class:`TemplateError` (one line)."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise TemplateError(f"template {self.ref} needs variables {missing}")
        try:
            template, _ = _compile(self.source)
            text = template.render(**variables)
        except TemplateError as exc:
            raise TemplateError(f"cannot render {self.ref}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - SecurityError, UndefinedError, errors of filters
            raise TemplateError(f"cannot render {self.ref}: {_one_line(exc)}") from None
        if self.mode == "completion":
            return RenderedPrompt(mode="completion", prompt=text)
        return RenderedPrompt(mode="chat", messages=_split_messages(text, self.ref))


def _split_messages(text: str, ref: str) -> list[dict[str, str]]:
    parts = _ROLE_LINE.split(text)
    if len(parts) < 3:
        raise TemplateError(f"chat template {ref} has no [[system]]/[[user]] lines")
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if content:
            messages.append({"role": role, "content": content})
    return messages


def load_template(path: str | Path, name: str | None = None) -> PromptTemplate:
    """Load one template file; ``name`` defaults to the file stem without any ``@sha12`` suffix. The source
    is parsed and checked in the sandbox (see the module doc); a refused one raises :class:`TemplateError`."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    match = _HEADER.match(source)
    if not match:
        raise TemplateError(f"{path}: missing the '{{#- --- ... --- -#}}' metadata header")
    try:
        meta = yaml.safe_load(match.group("yaml")) or {}
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: the metadata header is not valid YAML ({_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise TemplateError(f"{path}: the metadata header must be a YAML mapping (mode: ..., family: ...)")
    mode = meta.get("mode")
    if mode not in _MODES:
        raise TemplateError(f"{path}: mode must be one of {_MODES}, got {mode!r}")
    stop = meta.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
        raise TemplateError(f"{path}: stop must be a list of non-empty strings, got {stop!r}")
    try:
        _, variables = _compile(source)
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc}") from None
    return PromptTemplate(
        name=name or path.stem.split("@", 1)[0],
        mode=mode,
        family=str(meta.get("family", "list")),
        description=str(meta.get("description", "")).strip(),
        version=hashlib.sha256(raw).hexdigest(),
        path=path,
        source=source,
        variables=variables,
        stop=tuple(stop),
    )


def list_templates(extra_dirs: Iterable[str | Path] = ()) -> list[PromptTemplate]:
    """Packaged templates (current versions), then any kept versions found in ``extra_dirs``."""
    found: dict[str, PromptTemplate] = {}
    for path in sorted(PACKAGE_DIR.glob("*.jinja2")):
        t = load_template(path)
        found[t.ref] = t
    for d in extra_dirs:
        for path in sorted(Path(d).glob("*.jinja2")):
            t = load_template(path)
            found.setdefault(t.ref, t)
    return list(found.values())


def get_template(ref: str, search_dirs: Iterable[str | Path] = ()) -> PromptTemplate:
    """Resolve ``name``, ``name@sha12`` (packaged or kept in ``search_dirs``) or a ``.jinja2`` path."""
    candidate = Path(ref)
    if ref.endswith(".jinja2") and candidate.exists():
        return load_template(candidate)
    name, _, sha = ref.partition("@")
    packaged = PACKAGE_DIR / f"{name}.jinja2"
    if packaged.exists():
        t = load_template(packaged)
        if not sha or t.version.startswith(sha):
            return t
    for d in search_dirs:
        d = Path(d)
        pattern = f"{name}@{sha}*.jinja2" if sha else f"{name}@*.jinja2"
        matches = sorted(d.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in matches:
            t = load_template(path)
            if not sha or t.version.startswith(sha):
                return t
    known = ", ".join(sorted({t.name for t in list_templates()}))
    where = f" (also searched {', '.join(map(str, search_dirs))})" if search_dirs else ""
    raise TemplateError(f"unknown template {ref!r}{where}; packaged templates: {known}")


def snapshot(template: PromptTemplate, dest_dir: str | Path) -> Path:
    """Keep this version as ``dest_dir/<name>@<sha12>.jinja2``; an existing copy is never rewritten."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{template.ref}.jinja2"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(template.source.encode("utf-8"))
        tmp.replace(target)
    return target
