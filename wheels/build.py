"""Build a prebuilt wheel for one backend: ``python wheels/build.py --backend cpu|cuda|vulkan|metal``.

- cpu: upstream's dynamic backend loading with every CPU variant (GGML_BACKEND_DL,
  GGML_CPU_ALL_VARIANTS), so one wheel picks SSE4.2/AVX2/AVX-512/AMX kernels on the user's CPU.
- cuda: the same CPU variants plus the CUDA backend as a loadable module, compiled by the nvcc
  of ``--cuda-home`` (CUDA 12 or 13; the wheel goes to cu12/ or cu13/) for
  ``--cuda-architectures``. cuBLAS and cudart come from NVIDIA's pip wheels, which the wheel
  depends on and finds through its RPATH; the driver's libcuda is found at run time
  (GGML_CUDA_NO_VMM), so without a GPU or driver the wheel imports, warns once and runs on
  the CPU. PyPI has no CUDA 12 nvcc (nvidia-cuda-nvcc-cu12 holds only ptxas), so a cu12 wheel
  needs a toolkit from NVIDIA's repository, as the workflow installs one.
- vulkan: the CPU variants plus Vulkan (needs glslc and Vulkan headers 1.3.261 or newer, for
  VK_EXT_layer_settings: Debian 12's 1.3.239 is too old; uses the system's Vulkan loader at
  run time). metal: macOS arm64 only (the cibuildwheel settings in
  pyproject.toml and .github/workflows/wheels.yml).

Before building, the recipe's tools are checked (wheels/preflight.py): what is missing stops the
script at once with one line that says how to install it (``--check`` does only that). The Python
ones come with ``pip install -r wheels/requirements.txt``.

Linux wheels go through ``auditwheel repair``: the manylinux tag follows the glibc of the build
machine (release wheels build in cibuildwheel's manylinux_2_28 image), and the CUDA libraries
are left out because they come from their own wheels. Every wheel names the llama.cpp commit
in its metadata; macOS wheels go through ``delocate-wheel``. The result lands in
wheels/dist/<backend>/ with its size and build time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metadata import CUDA_WHEELS, add_headers, prebuilt_headers
from preflight import cublas_dir, nvcc_version, recipe_needs, summary, tool_path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "wheels" / "dist"
CPU_VARIANTS = ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DGGML_NATIVE=OFF"]
DEFAULT_CUDA_ARCHITECTURES = "75-real;80-real;86-real;89-real;90-real;90-virtual"

# left to their own wheels (and the driver) by auditwheel
CUDA_LIBRARIES = ["libcuda.so.1", "libcudart.so.{v}", "libcublas.so.{v}", "libcublasLt.so.{v}"]


def cublas_link_dir(major: str) -> tuple[Path, Path]:
    """cuBLAS from its pip wheel (the toolkit may have none): (include dir, dir of unversioned links)."""
    base = cublas_dir(major)
    assert base is not None, "preflight.cuda_tools checked it"
    links = Path(tempfile.mkdtemp(prefix="cublas-"))
    for name in ("cublas", "cublasLt"):
        (links / f"lib{name}.so").symlink_to(next((base / "lib").glob(f"lib{name}.so.{major}*")))
    return base / "include", links


def cmake_args(args: argparse.Namespace) -> list[str]:
    if args.backend == "cpu":
        return CPU_VARIANTS
    if args.backend == "cuda":
        include, links = cublas_link_dir(args.cuda_major)
        rpath = ";".join(f"$ORIGIN/../nvidia/{d}/lib" for d in CUDA_WHEELS[args.cuda_major]["dirs"])
        return [*CPU_VARIANTS, "-DGGML_CUDA=ON", "-DGGML_CUDA_NO_VMM=ON",
                f"-DCMAKE_CUDA_COMPILER={args.cuda_home / 'bin' / 'nvcc'}",
                f"-DCUDAToolkit_ROOT={args.cuda_home}",
                f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_architectures}",
                f"-DCUDA_cublas_LIBRARY={links / 'libcublas.so'}", f"-DCUDA_cublasLt_LIBRARY={links / 'libcublasLt.so'}",
                f"-DCMAKE_CUDA_FLAGS=-I{include}", f"-DCMAKE_CXX_FLAGS=-I{include}",
                f"-DCMAKE_INSTALL_RPATH={rpath}"]
    if args.backend == "vulkan":
        return [*CPU_VARIANTS, "-DGGML_VULKAN=ON"]
    return ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON", "-DGGML_NATIVE=OFF"]


def repair(wheel: Path, out: Path, args: argparse.Namespace) -> None:
    """Into ``out``: the wheel with its outside libraries bundled and the platform tag they allow."""
    tools = {**os.environ, "PATH": tool_path()}
    if sys.platform.startswith("linux") and not args.no_repair:
        excludes = []
        if args.backend == "cuda":
            for library in CUDA_LIBRARIES:
                excludes += ["--exclude", library.format(v=args.cuda_major)]
        if args.backend == "vulkan":  # the system's Vulkan loader, which finds the GPU's driver
            excludes += ["--exclude", "libvulkan.so.1"]
        subprocess.run([sys.executable, "-m", "auditwheel", "repair", str(wheel), "-w", str(out), *excludes],
                       env=tools, check=True)
    elif sys.platform == "darwin" and not args.no_repair:  # as cibuildwheel's repair step for the Metal wheel
        delocate = shutil.which("delocate-wheel", path=tools["PATH"]) or "delocate-wheel"
        subprocess.run([delocate, "--require-archs", "arm64", "-w", str(out), "-v", str(wheel)], env=tools, check=True)
    else:
        shutil.copy2(wheel, out / wheel.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("cpu", "cuda", "vulkan", "metal"), required=True)
    parser.add_argument("--cuda-home", type=Path, default=Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")))
    parser.add_argument("--cuda-architectures", default=DEFAULT_CUDA_ARCHITECTURES,
                        help="CMAKE_CUDA_ARCHITECTURES (default: Turing to Hopper, plus PTX for newer GPUs)")
    parser.add_argument("--no-repair", action="store_true",
                        help="skip auditwheel/delocate (e.g. for a quick local test)")
    parser.add_argument("--check", action="store_true", help="only check that the recipe's tools are here")
    args = parser.parse_args()
    if args.backend == "metal" and sys.platform != "darwin":
        raise SystemExit("the Metal wheel builds on macOS arm64 only (.github/workflows/wheels.yml)")
    missing = recipe_needs(args.backend, args.cuda_home, repair=not args.no_repair)
    if missing:
        raise SystemExit(summary(args.backend, missing))
    if args.check:
        print(f"wheels/build.py --backend {args.backend}: every tool it needs is here")
        return 0
    if args.backend == "cuda":
        args.cuda_version = nvcc_version(args.cuda_home)
        args.cuda_major = args.cuda_version.split(".")[0]
    env = {**os.environ, "CMAKE_ARGS": " ".join(cmake_args(args))}
    label = f"cu{args.cuda_major}" if args.backend == "cuda" else args.backend
    out = DIST / label
    out.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix="pyllama-wheel-"))
    start = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(ROOT), "-w", str(raw),
                        "--config-settings=build-dir=" + str(ROOT / "build" / f"wheel-{label}")], env=env, check=True)
        wheel = next(raw.glob("*.whl"))
        add_headers(wheel, prebuilt_headers(args.cuda_version if args.backend == "cuda" else None))
        repair(wheel, out, args)
    except subprocess.CalledProcessError as failed:  # the tool has said why, above
        step = " ".join("python" if part == sys.executable else Path(part).name for part in failed.cmd[:4])
        raise SystemExit(f"wheels/build.py --backend {args.backend}: `{step}` failed "
                         f"(exit status {failed.returncode}); its output is above")
    elapsed = time.monotonic() - start
    built = max(out.glob("*.whl"), key=lambda path: path.stat().st_mtime)
    print(f"{built}: {built.stat().st_size / 2**20:.1f} MiB, built in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
