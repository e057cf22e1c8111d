"""Write a PEP 503 simple index per backend from a folder of wheels.

    python wheels/index.py WHEEL_DIR OUT_DIR

WHEEL_DIR holds one folder per backend (cpu/, cu12/, cu13/, metal/, vulkan/), as
wheels/build.py leaves them; each becomes OUT_DIR/<backend>/simple/pyllama-cffi/ with an
index.html whose links carry sha256 fragments, so that
``pip install pyllama-cffi --index-url <base>/cu13/simple`` finds the CUDA 13 wheels.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import sys
from pathlib import Path

PROJECT = "pyllama-cffi"
BACKENDS = ("cpu", "cu12", "cu13", "metal", "vulkan")


def write_index(wheel_dir: Path, out: Path) -> dict[str, list[str]]:
    written: dict[str, list[str]] = {}
    for backend in BACKENDS:
        wheels = sorted((wheel_dir / backend).glob("*.whl"))
        if not wheels:
            continue
        folder = out / backend / "simple" / PROJECT
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in wheels:
            shutil.copy2(wheel, folder / wheel.name)
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            links.append(f'<a href="{html.escape(wheel.name)}#sha256={digest}">{html.escape(wheel.name)}</a><br>')
        (folder / "index.html").write_text(
            f"<!DOCTYPE html><html><body><h1>Links for {PROJECT}</h1>\n" + "\n".join(links) + "\n</body></html>\n")
        (out / backend / "simple" / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{PROJECT}/">{PROJECT}</a></body></html>\n')
        written[backend] = [w.name for w in wheels]
    return written


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    written = write_index(Path(sys.argv[1]), Path(sys.argv[2]))
    if not written:
        print(f"no wheels in {sys.argv[1]}/<backend>/", file=sys.stderr)
        return 1
    for backend, names in written.items():
        print(f"{backend}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
