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
