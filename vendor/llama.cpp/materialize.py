"""Materialize the pinned llama.cpp tree next to this script.

The project commits no third-party source. ``pin.json`` names a registry artifact
that carries upstream llama.cpp (the llama-cpp-python sdist vendors it) and its
sha256. This script fetches that artifact by name from the package index, checks
the hash, caches it in the user's cache dir and extracts only llama.cpp, without
the folders the build does not need. It runs from CMake at configure time and is
a no-op when the tree is already there.

    python vendor/llama.cpp/materialize.py [--cache-dir DIR] [--artifact FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIN_FILE = HERE / "pin.json"
TRACKED = {"pin.json", "materialize.py"}
STAMP = ".materialized"
DEFAULT_INDEX = "https://pypi.org/simple"


class MaterializeError(Exception):
    """The pinned tree could not be produced; the message says why."""


def load_pin() -> dict:
    return json.loads(PIN_FILE.read_text())


def user_cache_dir() -> Path:
    if "PYLLAMA_CACHE_DIR" in os.environ:
        return Path(os.environ["PYLLAMA_CACHE_DIR"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pyllama"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "pyllama" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyllama"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise MaterializeError(
            f"{path}: sha256 {actual} does not match the pinned {expected}. "
            "The file is corrupt or not the pinned artifact; delete it to fetch it again."
        )


def artifact_url(artifact: dict) -> str:
    """Look the artifact up by name in the package index (PEP 691 JSON API)."""
    index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")
    request = urllib.request.Request(
        f"{index}/{artifact['project']}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = json.load(response)
    for entry in listing.get("files", []):
        if entry["filename"] == artifact["filename"]:
            return entry["url"]
    raise MaterializeError(f"{artifact['filename']} is not listed in the index at {index}")


def download(artifact: dict, target: Path) -> None:
    url = artifact_url(artifact)
    print(f"pyllama: fetching {artifact['filename']} (llama.cpp source) into {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=300) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    verify(partial, artifact["sha256"])
    partial.replace(target)


def obtain_artifact(pin: dict, cache_dir: Path, given: Path | None) -> Path:
    artifact = pin["artifact"]
    if given is not None:
        verify(given, artifact["sha256"])
        return given
    cached = cache_dir / artifact["filename"]
    if not cached.exists():
        try:
            download(artifact, cached)
        except OSError as exc:
            raise MaterializeError(
                f"could not download {artifact['filename']} ({exc}). Fetch it yourself with "
                f"`pip download --no-deps --no-binary :all: {artifact['project']}=={artifact['version']}` "
                "and pass it with PYLLAMA_LLAMA_CPP_ARTIFACT=path, or point "
                "PYLLAMA_LLAMA_CPP_DIR at a llama.cpp checkout."
            ) from exc
    verify(cached, artifact["sha256"])
    return cached


def clear_tree(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.name in TRACKED:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def extract(archive: Path, pin: dict, dest: Path) -> None:
    prefix = pin["artifact"]["subdir"].rstrip("/") + "/"
    excluded = set(pin["exclude"])
    clear_tree(dest)
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory(dir=dest) as tmp:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix):
                continue
            relative = member.name[len(prefix):]
            if not relative or relative.split("/", 1)[0] in excluded:
                continue
            member.name = relative
            members.append(member)
        if not members:
            raise MaterializeError(f"{archive} holds no {prefix}")
        tar.extractall(tmp, members=members, filter="data")
        for entry in Path(tmp).iterdir():
            entry.rename(dest / entry.name)


def materialize(dest: Path, cache_dir: Path, given: Path | None = None) -> Path:
    pin = load_pin()
    stamp = dest / STAMP
    wanted = f"{pin['artifact']['sha256']} {pin['commit']}\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    archive = obtain_artifact(pin, cache_dir, given)
    extract(archive, pin, dest)
    stamp.write_text(wanted)
    print(f"pyllama: llama.cpp {pin['commit'][:9]} materialized in {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--artifact", type=Path, default=os.environ.get("PYLLAMA_LLAMA_CPP_ARTIFACT"))
    parser.add_argument("--dest", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        materialize(args.dest, args.cache_dir or user_cache_dir(), args.artifact)
    except MaterializeError as exc:
        print(f"pyllama: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
