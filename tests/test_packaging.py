"""The wheel installs one distinctive namespace (``activesynth``), never the generic top-level names of the
repository's folders, and every package folder is listed in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "agent": "activesynth.agent",
    "evaluators": "activesynth.evaluators",
    "prompts": "activesynth.prompts",
}


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


@pytest.mark.slow
def test_the_wheel_holds_one_namespace_and_the_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("active_synthesis-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"activesynth"}
    assert "activesynth/prompts/self_instruct_list.jinja2" in names
    assert (
        "activesynth/agent/cli/__init__.py" in names and "activesynth/evaluators/metrics/__init__.py" in names
    )
