"""The path PyPI users take: the sdist (the only file PyPI holds) builds with CMAKE_ARGS in a fresh
venv without fetching llama.cpp, carries both licenses; and the Python versions claimed are true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import venv

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OPENBLAS = "-DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"

INSTALLED_CHECK = """
import sys
from importlib.metadata import distribution
import pyllama
from pyllama import Llama, system_info
from pyllama._binding import BUILD_FLAGS, LIBRARY_DIR

assert LIBRARY_DIR.is_relative_to(sys.prefix), LIBRARY_DIR  # the venv's copy, not the checkout's
assert BUILD_FLAGS["GGML_BLAS"] == "ON" and "BLAS" in system_info().backends, system_info().backends
meta = distribution("pyllama-cffi").metadata
assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE", "LICENSE-llama.cpp"]
with Llama(sys.argv[1], n_ctx=64, seed=1) as llm:
    print(llm("hello", max_tokens=4)["usage"]["completion_tokens"])
"""


def floor() -> tuple[int, int]:
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()
    return int(major), int(minor)


def test_the_oldest_python_claimed_is_the_one_every_part_is_built_and_checked_for():
    major, minor = floor()
    assert PYPROJECT["tool"]["scikit-build"]["wheel"]["py-api"] == f"cp{major}{minor}"  # the abi3 wheel's tag
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f"find_package(Python {major}.{minor} REQUIRED" in cmake and f"USE_SABI {major}.{minor} " in cmake
    claimed = [c.rsplit(" :: ", 1)[1] for c in PYPROJECT["project"]["classifiers"] if re.search(r":: 3\.\d+$", c)]
    assert claimed[0] == f"{major}.{minor}", claimed
    assert f"Python ≥ {major}.{minor}" in (REPO / "README.md").read_text()


def test_no_code_needs_a_newer_python_than_the_floor():
    # vermin reads the syntax and the standard library names each file uses; the typed request
    # models' X | Y unions are why the floor is 3.10 (pydantic evaluates them at run time)
    major, minor = floor()
    result = subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", f"-t={major}.{minor}-", "--violations", "--no-tips",
                             "--no-parse-comments", "--eval-annotations", "pyllama", "tests", "wheels", "examples",
                             "bench", "cmake", "vendor/llama.cpp/materialize.py"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sdist_builds_and_installs_with_openblas_without_fetching_llama_cpp(tmp_path, tiny_spm):
    """What `CMAKE_ARGS=... pip install pyllama-cffi` does: pip builds the sdist in isolation, in a
    fresh venv with an empty cache. Slow (a whole llama.cpp build), so it runs once, here."""
    dist = tmp_path / "dist"
    sdist_build = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist),
                                  str(REPO)], capture_output=True, text=True, timeout=600)
    assert sdist_build.returncode == 0, sdist_build.stdout[-3000:] + sdist_build.stderr[-3000:]
    sdist = next(dist.glob("pyllama_cffi-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        pkg_info = archive.extractfile(f"{top}/PKG-INFO").read().decode()
    assert {"LICENSE", "LICENSE-llama.cpp", "vendor/llama.cpp/include/llama.h",
            "vendor/llama.cpp/.materialized", "pyllama/__init__.py"} <= names
    assert not any(name.startswith(("build/", ".ci/", "vendor/llama.cpp/models/")) or name.endswith(".whl")
                   for name in names)
    assert {"License-Expression: MIT", "License-File: LICENSE", "License-File: LICENSE-llama.cpp",
            f"Requires-Python: >={'.'.join(map(str, floor()))}"} <= set(pkg_info.splitlines())

    venv.create(tmp_path / "venv", with_pip=True, symlinks=True)
    python = tmp_path / "venv" / "bin" / "python"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYLLAMA_", "PYTHON"))}
    env.update(PATH=f"{python.parent}:/usr/bin:/bin", CMAKE_ARGS=OPENBLAS, PYLLAMA_CACHE_DIR=str(tmp_path / "cache"),
               # the sdist's own tree must be used: a fetch would have to read this file and fail
               PYLLAMA_LLAMA_CPP_ARTIFACT=str(tmp_path / "no-such-artifact.tar.gz"))
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-cache-dir", "-v", str(sdist)],
                             env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    assert "materialized in" not in install.stdout + install.stderr  # BLAS itself: checked in the venv below
    assert not (tmp_path / "cache").exists()

    run = subprocess.run([str(python), "-c", INSTALLED_CHECK, str(tiny_spm[0])], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["4"]


def test_every_extra_is_in_the_readme_with_the_pythons_it_supports():
    table = (REPO / "README.md").read_text().split("| extra | brings | Python |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in table.strip().splitlines()[1:]}
    assert set(rows) == set(PYPROJECT["project"]["optional-dependencies"])
    assert all(rows.values()), rows
