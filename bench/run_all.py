"""The whole benchmark suite in one command: builds the references it needs, runs every bench,
writes bench/results/latest.md and bench/results/latest.png.

    python bench/run_all.py [--threads 2] [--quick]

References, built once outside the package and kept in bench/ (git-ignored), with the CPU-side
backends of the installed pyllama (OpenBLAS or not: a "-blas" suffix on the folders):
- llama-cpp-python 0.3.36 from its pinned sdist, in its own venv (bench/.lcp-venv);
- llama.cpp's llama-bench, llama-server and llama-perplexity from the vendored tree (bench/.native).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NATIVE = HERE / ".native"
LCP_VENV = HERE / ".lcp-venv"
RESULTS = HERE / "results"


# checked before anything is built (the chart, the last step, needs matplotlib): name -> how to install it
REQUIREMENTS = "pip install -r bench/requirements.txt"
MODULES = {"pyllama": "pip install .", "gguf": REQUIREMENTS, "fastapi": REQUIREMENTS, "uvicorn": REQUIREMENTS,
           "matplotlib": REQUIREMENTS}
PROGRAMS = {"cmake": REQUIREMENTS, "ninja": REQUIREMENTS}


def missing_requirements() -> str | None:
    """One line naming what is not installed and how to install it, or None."""
    absent = [(name, how) for name, how in MODULES.items() if importlib.util.find_spec(name) is None]
    absent += [(name, how) for name, how in PROGRAMS.items() if shutil.which(name) is None]
    if not absent:
        return None
    by_command: dict[str, list[str]] = {}
    for name, how in absent:
        by_command.setdefault(how, []).append(name)
    return "bench/run_all.py needs " + ", and ".join(f"{', '.join(names)} ({how})" for how, names in by_command.items())


def without_amx() -> list[str]:
    """CMake flags that leave ggml's AMX kernels out, as pyllama's own native build does on x86
    (CMakeLists.txt): virtual machines often report AMX without enabling its tile state, and the
    references must be built as pyllama is for the ratios to compare like with like."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]


def same_backends() -> tuple[str, list[str]]:
    """The CPU-side backends of the pyllama under test, and the CMake flags that build the references
    with them: OpenBLAS changes prompt speed (slower for small batches of a quantized model), so a
    reference without it would measure the backend, not the binding."""
    from pyllama.system import devices

    blas = [device for device in devices() if device.name == "BLAS"]
    if not blas:
        return "CPU", []
    vendor = "OpenBLAS" if "openblas" in blas[0].description.lower() else "Generic"
    return f"CPU + BLAS ({blas[0].description})", ["-DGGML_BLAS=ON", f"-DGGML_BLAS_VENDOR={vendor}"]


def native_tools(backend: list[str]) -> Path:
    binaries = (NATIVE.with_name(NATIVE.name + "-blas") if backend else NATIVE) / "bin"
    if not (binaries / "llama-server").exists():
        print("bench: building llama.cpp's tools from the vendored tree", flush=True)
        subprocess.run(["cmake", "-S", str(ROOT / "vendor" / "llama.cpp"), "-B", str(binaries.parent), "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", *without_amx(),
                        *backend], check=True)
        subprocess.run(["cmake", "--build", str(binaries.parent), "--target", "llama-bench", "llama-server",
                        "llama-perplexity"], check=True)
    return binaries


def llama_cpp_python(backend: list[str]) -> Path:
    folder = LCP_VENV.with_name(LCP_VENV.name + "-blas") if backend else LCP_VENV
    python = folder / "bin" / "python"
    if not python.exists():
        print("bench: building llama-cpp-python 0.3.36 from its sdist", flush=True)
        venv.create(folder, with_pip=True)
        cmake_args = " ".join(f'"{flag}"' for flag in [*without_amx(), *backend])
        subprocess.run([str(python), "-m", "pip", "install", "--no-binary", "llama-cpp-python",
                        "llama-cpp-python[server]==0.3.36"], check=True,
                       env={**os.environ, "CMAKE_ARGS": f"{os.environ.get('CMAKE_ARGS', '')} {cmake_args}".strip()})
    return python


def run(script: str, *args: str) -> str:
    print(f"bench: {script} {' '.join(args)}", flush=True)
    out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench/run_all.py: {script} failed (exit status {out.returncode}); its output is above")
    return out.stdout.strip()


def machine() -> str:
    """The CPU and core count the figures come from: ratios hold across machines, speeds do not."""
    model = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def ratios(table: str, row: str) -> list[float]:
    """The 'N.NNx' or plain ratio cells of the row that starts with ``row``."""
    line = next(l for l in table.splitlines() if l.startswith(f"| {row}"))
    return [float(v) for v in re.findall(r"\| (\d+\.\d+)x? (?=\|)", line + " ")]


def chart(entries: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = zip(*entries)
    figure, axis = plt.subplots(figsize=(9, 0.5 * len(entries) + 1.5))
    axis.barh(labels, values, color=["#2b7bb9" if v >= 1 else "#d9822b" for v in values])
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xlabel("pyllama speed / reference speed (higher is better)")
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no ~1B model")
    args = parser.parse_args()
    # pip puts cmake and ninja next to this interpreter, which a venv used without activating lacks on PATH
    os.environ["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    missing = missing_requirements()
    if missing:
        raise SystemExit(missing)
    backends, backend_flags = same_backends()
    try:
        tools, python = native_tools(backend_flags), llama_cpp_python(backend_flags)
    except subprocess.CalledProcessError as failed:  # cmake or pip has said why, above
        raise SystemExit(f"bench/run_all.py: building a reference failed ({' '.join(map(str, failed.cmd[:3]))} ...)")
    rounds = "2" if args.quick else "5"
    models = ["tiny-f32"] if args.quick else ["tiny-f32", "110m-q8_0", "1b-q4_0"]
    sections = {
        "Generation loop (Batch + decode + sample) vs llama-bench":
            run("generation_loop.py", "--llama-bench", str(tools / "llama-bench"), "--threads", args.threads,
                "--rounds", rounds),
        "create_completion vs llama-cpp-python and llama-bench":
            run("completion.py", "--llama-cpp-python", str(python), "--llama-bench", str(tools / "llama-bench"),
                "--threads", args.threads, "--rounds", "2" if args.quick else "3", "--models", *models),
        "Server throughput":
            run("server.py", "--llama-cpp-python", str(python), "--llama-server", str(tools / "llama-server"),
                "--threads", args.threads),
        "Speculative decoding": run("speculative.py", "--threads", args.threads,
                                    *(["--model", "small-q8_0"] if args.quick else [])),
        "Binding call overhead": run("call_overhead.py", str(HERE / ".models" / "tiny-f32.gguf"),
                                     "--llama-cpp-python", str(python)),
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = [f"# Benchmarks ({stamp}, {args.threads} threads)\n", f"Machine: {machine()}.\n",
            f"Backends: {backends}, pyllama and the references alike.\n"]
    text += [f"## {title}\n\n{table}\n" for title, table in sections.items()]
    (RESULTS / "latest.md").write_text("\n".join(text))
    entries = []
    completion = sections["create_completion vs llama-cpp-python and llama-bench"]
    for model in models:
        first, second = ratios(completion, model)[-2:]
        entries += [(f"completion {model} vs llama-cpp-python", first), (f"completion {model} vs native", second)]
    server = sections["Server throughput"]
    for reference in ("llama-cpp-python", "llama-server"):
        entries.append((f"server 8 clients vs {reference}", ratios(server, f"pyllama / {reference}")[-1]))
    chart(entries, RESULTS / "latest.png")
    print((RESULTS / "latest.md").read_text())


if __name__ == "__main__":
    main()
