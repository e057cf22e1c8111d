"""wheels/index.py writes a PEP 503 index per backend that pip can read."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

from conftest import REPO


def test_index_per_backend(tmp_path):
    wheels, out = tmp_path / "dist", tmp_path / "index"
    for backend, name in (("cpu", "pyllama_cffi-0.1.0-cp39-abi3-linux_x86_64.whl"),
                          ("cu13", "pyllama_cffi-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl")):
        (wheels / backend).mkdir(parents=True)
        (wheels / backend / name).write_bytes(f"{backend} wheel".encode())
    result = subprocess.run([sys.executable, str(REPO / "wheels" / "index.py"), str(wheels), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (out / "cu13" / "simple" / "pyllama-cffi" / "index.html").read_text()
    href, digest = re.search(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', page).groups()
    assert digest == hashlib.sha256(b"cu13 wheel").hexdigest()
    assert (out / "cu13" / "simple" / "pyllama-cffi" / href).exists()
    assert 'href="pyllama-cffi/"' in (out / "cpu" / "simple" / "index.html").read_text()
    assert not (out / "metal").exists()
    empty = subprocess.run([sys.executable, str(REPO / "wheels" / "index.py"), str(tmp_path / "none"), str(out)],
                           capture_output=True, text=True)
    assert empty.returncode == 1
