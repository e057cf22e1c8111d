"""Stamp a built wheel with what a prebuilt wheel must say: ``python wheels/metadata.py WHEEL [--cuda 13.0]``.

The build backend writes the same metadata for every backend; a prebuilt wheel needs more:
the llama.cpp commit it was built from (as a Project-URL, which ``pip show -v`` lists) and,
for a CUDA wheel, NVIDIA's runtime wheels as dependencies. The headers go into METADATA
and RECORD is kept valid, before auditwheel/delocate repair the wheel.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# NVIDIA's runtime wheels per CUDA major version: the projects to require, and the folders
# under site-packages/nvidia/ that hold their libraries.
CUDA_WHEELS = {
    "13": {"projects": ["nvidia-cuda-runtime", "nvidia-cublas"], "dirs": ["cu13"]},
    "12": {"projects": ["nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12"], "dirs": ["cuda_runtime", "cublas"]},
}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def add_headers(wheel: Path, headers: list[tuple[str, str]]) -> None:
    """Insert ``headers`` after the existing ones in the wheel's METADATA, in place."""
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    dist_info = next(info.filename.split("/")[0] for info, _ in entries if info.filename.endswith(".dist-info/METADATA"))
    metadata_name, record_name = f"{dist_info}/METADATA", f"{dist_info}/RECORD"

    rewritten = []
    new_metadata = b""
    for info, data in entries:
        if info.filename == metadata_name:
            head, _, body = data.decode("utf-8").partition("\n\n")
            head += "".join(f"\n{name}: {value}" for name, value in headers)
            new_metadata = data = (head + "\n\n" + body).encode("utf-8")
        elif info.filename == record_name:
            lines = [line for line in data.decode("utf-8").splitlines() if not line.startswith(metadata_name + ",")]
            lines.append(f"{metadata_name},{_record_hash(new_metadata)},{len(new_metadata)}")
            data = ("\n".join(lines) + "\n").encode("utf-8")
        rewritten.append((info, data))

    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in rewritten:  # RECORD comes last in a wheel, after METADATA
            target.writestr(info, data)
    os.replace(partial, wheel)


def read_headers(wheel: Path) -> list[tuple[str, str]]:
    """The (name, value) headers of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as source:
        name = next(n for n in source.namelist() if n.endswith(".dist-info/METADATA"))
        head = source.read(name).decode("utf-8").partition("\n\n")[0]
    return [tuple(line.split(": ", 1)) for line in head.splitlines() if ": " in line]


def prebuilt_headers(cuda_version: str | None) -> list[tuple[str, str]]:
    """The commit, and for a wheel built with CUDA ``cuda_version`` ("13.0") the runtime wheels
    of that release or a later one of the same major version."""
    pin = json.loads((ROOT / "vendor" / "llama.cpp" / "pin.json").read_text())
    headers = [("Project-URL", f"llama.cpp, https://github.com/{pin['upstream']}/tree/{pin['commit']}")]
    if cuda_version:
        major = cuda_version.split(".")[0]
        for project in CUDA_WHEELS[major]["projects"]:
            headers.append(("Requires-Dist", f"{project}>={cuda_version},<{int(major) + 1}"))
    return headers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--cuda", metavar="MAJOR.MINOR", help="the CUDA release the wheel was built with")
    args = parser.parse_args()
    add_headers(args.wheel, prebuilt_headers(args.cuda))
    return 0


if __name__ == "__main__":
    sys.exit(main())
