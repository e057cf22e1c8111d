"""Install a built wheel the way a user would and check it: ``python wheels/check.py --backend cpu``.

Writes the package index of wheels/dist/ (wheels/index.py), serves it over a loopback
http.server, creates a fresh venv and runs ``pip install --only-binary=:all:
--extra-index-url http://127.0.0.1:PORT/<backend>/simple pyllama-cffi[test]`` with no compiler
on PATH. Then, from a folder outside the checkout (so that ``import pyllama`` is the installed
wheel): imports it, prints ``pyllama info``, generates from a model the test helpers write,
and runs the test suite against the installed package (``--no-tests`` skips that; arguments
after ``--`` go to pytest).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path

from index import write_index

ROOT = Path(__file__).resolve().parent.parent

GENERATE = """
import sys, time, pyllama
sys.path.insert(0, sys.argv[1])
from models import write_llama
write_llama("model.gguf", "spm", seed=1)
llm = pyllama.Llama("model.gguf", n_ctx=128, n_gpu_layers=-1, seed=1)
start = time.perf_counter()
out = llm("hello", max_tokens=16, temperature=0)
print(f"generated {out['usage']['completion_tokens']} tokens in {time.perf_counter() - start:.3f} s:",
      repr(out["choices"][0]["text"]))
print("installed at", pyllama.__file__)
"""


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def step(title: str, command: list[str], **kwargs) -> None:
    shown = " ".join(part if "\n" not in part else "<script>" for part in command)
    print(f"\n== {title}: {shown}", flush=True)
    start = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    print(f"== {title}: done in {time.monotonic() - start:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cpu", help="a folder of wheels/dist/ (cpu, cu13, ...)")
    parser.add_argument("--dist", type=Path, default=ROOT / "wheels" / "dist")
    parser.add_argument("--no-tests", action="store_true", help="install, import and generate only")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pyllama-wheel-check-"))
    if not write_index(args.dist, work / "index").get(args.backend):
        raise SystemExit(f"no wheel in {args.dist / args.backend}; build one with wheels/build.py")
    server = serve(work / "index")
    index_url = f"http://127.0.0.1:{server.server_port}/{args.backend}/simple"

    venv.create(work / "venv", with_pip=True)
    bin_dir = work / "venv" / ("Scripts" if sys.platform == "win32" else "bin")
    python = str(bin_dir / "python")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    # --only-binary refuses every source build; a compiler that always fails makes sure of it
    no_compiler = {**env, "CC": "/bin/false", "CXX": "/bin/false"}
    step("install", [python, "-m", "pip", "install", "--only-binary=:all:", "--extra-index-url", index_url,
                     "pyllama-cffi[test,server]"], env=no_compiler, cwd=work)
    server.shutdown()
    step("info", [python, "-m", "pyllama", "info"], env=env, cwd=work)
    step("generate", [python, "-c", GENERATE, str(ROOT / "tests")], env=env, cwd=work)
    if not args.no_tests:
        step("tests", [python, "-m", "pytest", str(ROOT / "tests"), "-q", "-p", "no:cacheprovider",
                       *args.pytest_args], env=env, cwd=work)
    print(f"\nthe {args.backend} wheel installs and works (venv: {work / 'venv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
