"""Prompt templates: Jinja2 files with a YAML header, rendered with ``StrictUndefined``.

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
"""

from __future__ import annotations

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
        """Render with ``StrictUndefined``; a missing variable raises :class:`TemplateError`."""
        import jinja2

        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise TemplateError(f"template {self.ref} needs variables {missing}")
        env = jinja2.Environment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        try:
            text = env.from_string(self.source).render(**variables)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"cannot render {self.ref}: {exc}") from exc
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
    """Load one template file; ``name`` defaults to the file stem without any ``@sha12`` suffix."""
    import jinja2
    import jinja2.meta
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    source = raw.decode("utf-8")
    match = _HEADER.match(source)
    if not match:
        raise TemplateError(f"{path}: missing the '{{#- --- ... --- -#}}' metadata header")
    meta = yaml.safe_load(match.group("yaml")) or {}
    mode = meta.get("mode")
    if mode not in _MODES:
        raise TemplateError(f"{path}: mode must be one of {_MODES}, got {mode!r}")
    stop = meta.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
        raise TemplateError(f"{path}: stop must be a list of non-empty strings, got {stop!r}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    try:
        variables = tuple(sorted(jinja2.meta.find_undeclared_variables(env.parse(source))))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}: {exc}") from exc
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
