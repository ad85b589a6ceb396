"""The house in layers: faces → orchestration → stages → engines → ground. Nothing imports upward, no module
imports itself back through others (no circle), and functions stay short. Read from the source (AST), so
imports inside functions count too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "agent": "activesynth.agent",
    "evaluators": "activesynth.evaluators",
    "prompts": "activesynth.prompts",
}

# Lower number = lower layer. The first matching prefix decides.
LAYERS = [
    ("activesynth.agent.cli", 4, "faces"),
    ("activesynth.agent.chat", 4, "faces"),
    ("activesynth.agent.web", 4, "faces"),
    ("activesynth.agent.loop", 3, "orchestration"),
    ("activesynth.agent.experiments", 3, "orchestration"),
    ("activesynth.agent.llm", 1, "engines"),
    ("activesynth.agent.config", 0, "ground"),
    ("activesynth.agent.runs", 0, "ground"),
    ("activesynth.agent.control", 0, "ground"),
    ("activesynth.agent.files", 0, "ground"),
    ("activesynth.agent.sqlite_pool", 0, "ground"),
    ("activesynth.agent.pii", 0, "ground"),
    ("activesynth.agent.progress", 0, "ground"),
    ("activesynth.prompts", 0, "ground"),
    ("activesynth.agent", 2, "stages"),
    ("activesynth.evaluators", 2, "stages"),
]


def layer(module: str) -> tuple[int, str]:
    for prefix, level, name in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level, name
    raise AssertionError(f"{module} has no layer")


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``module`` imports (at any depth of its code)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_pkg else parts[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_has_a_layer(graph):
    for m in graph:
        layer(m)


def test_nothing_imports_upward(graph):
    upward = []
    for m, deps in graph.items():
        lm = layer(m)
        for d in deps:
            ld = layer(d)
            # a package's __init__ may re-export its own modules
            if ld[0] > lm[0] and not d.startswith(m + "."):
                upward.append(f"{m} ({lm[1]}) imports {d} ({ld[1]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle(graph):
    # parent packages import their children by definition; a circle through them is not a design circle
    edges = {
        m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_functions_stay_short():
    """No function of the package is 80 lines or longer (Typer commands count too)."""
    long = []
    for m, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n >= 80:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, "\n".join(long)


def _names_setting(path: Path, name: str) -> bool:
    """True when code in ``path`` handles the setting ``name`` (an identifier, attribute, keyword or a dotted
    key string ending in it), not when a docstring or help text mentions it as an example."""
    dotted = re.compile(rf"[\w.]*\b{name}")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Name)
            and node.id == name
            or isinstance(node, ast.Attribute)
            and node.attr == name
        ):
            return True
        if isinstance(node, ast.keyword | ast.arg) and (node.arg == name):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and dotted.fullmatch(node.value):
            return True
    return False


def test_the_rouge_threshold_crosses_few_files():
    """A setting travels config → loop → evaluator as part of its section: ``max_f`` is handled only by its
    settings model, the filter that uses it and the CLI flag that sets it; ``run``, ``/set`` and ``--set``
    reach it through the one generic ``override`` (agent/config/base.py), so the path from any face to
    ``RougeLFilter`` crosses at most 4 files."""
    files = {p.relative_to(ROOT).as_posix() for p in modules().values() if _names_setting(p, "max_f")}
    assert files == {"agent/config/filters.py", "evaluators/rouge.py", "agent/cli/filters.py"}
