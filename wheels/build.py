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

Linux wheels go through ``auditwheel repair``: the manylinux tag follows the glibc of the build
machine (release wheels build in cibuildwheel's manylinux_2_28 image), and the CUDA libraries
are left out because they come from their own wheels. Every wheel names the llama.cpp commit
in its metadata. The result lands in wheels/dist/<backend>/ with its size and build time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metadata import CUDA_WHEELS, add_headers, prebuilt_headers

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "wheels" / "dist"
CPU_VARIANTS = ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DGGML_NATIVE=OFF"]
DEFAULT_CUDA_ARCHITECTURES = "75-real;80-real;86-real;89-real;90-real;90-virtual"

# left to their own wheels (and the driver) by auditwheel
CUDA_LIBRARIES = ["libcuda.so.1", "libcudart.so.{v}", "libcublas.so.{v}", "libcublasLt.so.{v}"]


def nvcc_version(cuda_home: Path) -> str:
    """The toolkit's release, "13.0"."""
    nvcc = cuda_home / "bin" / "nvcc"
    if not nvcc.exists():
        raise SystemExit(f"no nvcc in {cuda_home}/bin: pass --cuda-home (or set CUDA_HOME) to a CUDA toolkit")
    found = re.search(r"release (\d+\.\d+)", subprocess.run([str(nvcc), "--version"], capture_output=True,
                                                           text=True, check=True).stdout)
    return found.group(1)


def cublas_link_dir(major: str) -> tuple[Path, Path]:
    """cuBLAS from its pip wheel (the toolkit may have none): (include dir, dir of unversioned links)."""
    try:
        import nvidia
    except ImportError:
        raise SystemExit(f"install NVIDIA's cuBLAS wheel first: pip install {CUDA_WHEELS[major]['projects'][1]}")
    base = Path(list(nvidia.__path__)[0]) / CUDA_WHEELS[major]["dirs"][-1]
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
    if sys.platform != "darwin":
        raise SystemExit("the Metal wheel builds on macOS arm64 only (.github/workflows/wheels.yml)")
    return ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON", "-DGGML_NATIVE=OFF"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("cpu", "cuda", "vulkan", "metal"), required=True)
    parser.add_argument("--cuda-home", type=Path, default=Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")))
    parser.add_argument("--cuda-architectures", default=DEFAULT_CUDA_ARCHITECTURES,
                        help="CMAKE_CUDA_ARCHITECTURES (default: Turing to Hopper, plus PTX for newer GPUs)")
    parser.add_argument("--no-repair", action="store_true", help="skip auditwheel (e.g. for a quick local test)")
    args = parser.parse_args()
    if args.backend == "cuda":
        args.cuda_version = nvcc_version(args.cuda_home)
        args.cuda_major = args.cuda_version.split(".")[0]
        if args.cuda_major not in CUDA_WHEELS:
            raise SystemExit(f"CUDA {args.cuda_version} at {args.cuda_home}: only CUDA 12 and 13 have runtime wheels")
    env = {**os.environ, "CMAKE_ARGS": " ".join(cmake_args(args))}
    label = f"cu{args.cuda_major}" if args.backend == "cuda" else args.backend
    out = DIST / label
    out.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix="pyllama-wheel-"))
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(ROOT), "-w", str(raw),
                    "--config-settings=build-dir=" + str(ROOT / "build" / f"wheel-{label}")], env=env, check=True)
    wheel = next(raw.glob("*.whl"))
    add_headers(wheel, prebuilt_headers(args.cuda_version if args.backend == "cuda" else None))
    if sys.platform.startswith("linux") and not args.no_repair:
        excludes = []
        if args.backend == "cuda":
            for library in CUDA_LIBRARIES:
                excludes += ["--exclude", library.format(v=args.cuda_major)]
        if args.backend == "vulkan":  # the system's Vulkan loader, which finds the GPU's driver
            excludes += ["--exclude", "libvulkan.so.1"]
        subprocess.run([sys.executable, "-m", "auditwheel", "repair", str(wheel), "-w", str(out), *excludes],
                       check=True)
    else:
        shutil.copy2(wheel, out / wheel.name)
    elapsed = time.monotonic() - start
    built = max(out.glob("*.whl"), key=lambda path: path.stat().st_mtime)
    print(f"{built}: {built.stat().st_size / 2**20:.1f} MiB, built in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
