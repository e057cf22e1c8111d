"""bench/run_all.py names what it needs before it builds anything (its last step needs matplotlib)."""

from __future__ import annotations

import subprocess
import time
import venv

from conftest import REPO


def test_run_all_names_what_is_missing_at_once(tmp_path):
    venv.create(tmp_path / "venv", with_pip=False, symlinks=True)  # nothing installed
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    start = time.monotonic()
    result = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), str(REPO / "bench" / "run_all.py")],
                            env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert time.monotonic() - start < 10  # building the references would take minutes
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "bench/run_all.py needs pyllama (pip install .), and gguf, fastapi, uvicorn, matplotlib, cmake, ninja "
        "(pip install -r bench/requirements.txt)"]
    for name in ("gguf", "fastapi", "uvicorn", "matplotlib", "cmake", "ninja"):
        assert any(line.startswith(name) for line in (REPO / "bench" / "requirements.txt").read_text().splitlines())


def test_the_references_are_built_with_the_backends_of_the_pyllama_under_test():
    """OpenBLAS changes prompt speed (for the worse on small batches of a quantized model): a
    reference built without it beside a pyllama built with it would time the backend, not pyllama."""
    import importlib.util

    from pyllama.system import devices

    spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    label, flags = run_all.same_backends()
    blas = [d for d in devices() if d.name == "BLAS"]
    assert ("-DGGML_BLAS=ON" in flags) == bool(blas)
    if blas:  # the test command installs pyllama with OpenBLAS
        assert "-DGGML_BLAS_VENDOR=OpenBLAS" in flags and "OpenBLAS" in label
    else:
        assert label == "CPU" and flags == []
