"""system_info() and `python -m pyllama info` describe the build that is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pyllama
from pyllama import system_info
from pyllama._binding import BUILD_FLAGS
from pyllama._binding.gpu_check import flag_on
from pyllama.enums import DeviceType


def built_with(flag: str) -> bool:
    return flag_on(BUILD_FLAGS.get(flag))


def test_reports_version_commit_and_cpu_device():
    info = system_info()
    assert info.version == pyllama.__version__
    assert len(info.llama_cpp_commit) >= 7 and info.llama_cpp_commit != "unknown"
    assert "CPU" in info.backends
    cpu = [d for d in info.devices if d.type == DeviceType.CPU]
    assert cpu and cpu[0].memory_total > 0
    assert "CPU :" in info.features  # after the GPU backend's features in a GPU build
    assert info.mmap


def test_blas_reported_exactly_when_built_with_blas():
    # CI builds with -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS (README test command).
    info = system_info()
    if built_with("GGML_BLAS"):
        assert "BLAS = 1" in info.features
        assert "BLAS" in info.backends
    else:
        assert "BLAS = 1" not in info.features
        assert "BLAS" not in info.backends


def test_rpc_backend_is_on_by_default():
    assert built_with("GGML_RPC")
    assert system_info().rpc
    assert "RPC" in system_info().backends


def test_info_command_runs_from_any_directory_without_library_path(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")}
    result = subprocess.run([sys.executable, "-m", "pyllama", "info"], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"pyllama {pyllama.__version__}" in result.stdout
    assert system_info().llama_cpp_commit in result.stdout
    assert "CPU :" in next(line for line in result.stdout.splitlines() if line.startswith("features: "))

    as_json = subprocess.run([sys.executable, "-m", "pyllama", "info", "--json"], capture_output=True,
                             text=True, cwd=tmp_path, env=env)
    data = json.loads(as_json.stdout)
    assert data["version"] == pyllama.__version__
    assert "CPU" in data["backends"]


def test_importing_a_cpu_build_gives_no_gpu_warning(tmp_path):
    if gpu_build():
        pytest.skip("a GPU build: whether it warns depends on this machine's GPU")
    run = subprocess.run([sys.executable, "-W", "error::pyllama.GPUUnavailableWarning", "-c", "import pyllama"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_gpu_backend_missing_from_a_wheel_is_explained(tmp_path):
    from pyllama._binding.gpu_check import unusable_gpu_backends

    flags = {"GGML_CUDA": "ON", "GGML_BACKEND_DL": "ON"}
    [message] = unusable_gpu_backends(flags, {"CPU": 1}, tmp_path, [])
    assert "built for CUDA" in message and "libggml-cuda.so is not installed" in message
    assert message.endswith("everything will run on the CPU")


def test_gpu_backend_that_fails_to_load_names_the_loader_error(tmp_path):
    from pyllama._binding.gpu_check import unusable_gpu_backends

    (tmp_path / "libggml-cuda.so").write_bytes(b"not a shared library")
    [message] = unusable_gpu_backends({"GGML_CUDA": "ON", "GGML_BACKEND_DL": "ON"}, {"CPU": 1}, tmp_path, [])
    assert "libggml-cuda.so" in message and ("ELF" in message or "too short" in message), message


def test_gpu_backend_without_devices_says_why_and_falls_back_to_cpu(tmp_path):
    from pyllama._binding.gpu_check import unusable_gpu_backends

    said = ["ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected"]
    [message] = unusable_gpu_backends({"GGML_CUDA": "ON"}, {"CPU": 1, "CUDA": 0}, tmp_path, said)
    assert "no CUDA device was found" in message and said[0] in message
    assert "CUDA_VISIBLE_DEVICES" in message
    assert unusable_gpu_backends({"GGML_CUDA": "ON"}, {"CPU": 1, "CUDA": 2}, tmp_path, []) == []
    assert unusable_gpu_backends({"GGML_CUDA": "OFF", "GGML_VULKAN": "OFF"}, {"CPU": 1}, tmp_path, []) == []


def gpu_build() -> bool:
    from pyllama._binding.gpu_check import GPU_BACKENDS

    return any(built_with(flag) for flag in GPU_BACKENDS)


def has_gpu() -> bool:
    return any(device.type in (DeviceType.GPU, DeviceType.IGPU) for device in system_info().devices
               if device.backend != "RPC")


def test_gpu_build_without_a_gpu_warns_once_and_generates_on_the_cpu(tiny_spm, tmp_path):
    if not gpu_build() or has_gpu():
        pytest.skip("for a GPU build (the CUDA wheel) on a machine without a usable GPU")
    code = ("import warnings; warnings.simplefilter('always'); import pyllama; "
            f"llm = pyllama.Llama({str(tiny_spm[0])!r}, n_gpu_layers=-1, n_ctx=64); "
            "print(llm('hello', max_tokens=4)['usage']['completion_tokens'])")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "GPUUnavailableWarning" in line]
    assert len(said) == 1 and "everything will run on the CPU" in said[0], run.stderr
    assert run.stdout.strip() == "4"


def test_gpu_build_with_a_gpu_offloads_every_layer(tiny_spm, caplog):
    if not gpu_build() or not has_gpu():
        pytest.skip("for a GPU build on a machine with a GPU")
    import re

    from pyllama import Llama

    with caplog.at_level("INFO", logger="pyllama"):
        llm = Llama(str(tiny_spm[0]), n_gpu_layers=-1, n_ctx=64, seed=1)
    offloaded = [re.search(r"offloaded (\d+)/(\d+) layers to GPU", r.getMessage()) for r in caplog.records]
    done, total = next(found.groups() for found in offloaded if found)
    assert done == total and int(total) > 0
    assert llm("hello", max_tokens=4)["usage"]["completion_tokens"] == 4


def test_cuda_backend_missing_a_runtime_library_names_the_wheels_that_have_it(tmp_path, monkeypatch):
    from pyllama._binding import gpu_check as _gpu_check

    (tmp_path / "libggml-cuda.so").write_bytes(b"")
    monkeypatch.setattr(_gpu_check, "_load_error",
                        lambda module: "libcublas.so.13: cannot open shared object file: No such file or directory")
    [message] = _gpu_check.unusable_gpu_backends({"GGML_CUDA": "ON", "GGML_BACKEND_DL": "ON"}, {"CPU": 1}, tmp_path, [])
    assert "libcublas.so.13: cannot open" in message and "nvidia-cublas" in message
