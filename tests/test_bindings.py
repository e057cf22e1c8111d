"""The cffi module is generated from llama.h: everything the header exports is reachable."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time


import pyllama
from conftest import without_gpu_warning
from pyllama import enums
from pyllama._binding import ffi, lib

LLAMA_API_FUNCTION = re.compile(r"LLAMA_API\s+(?:DEPRECATED\s*\()?[^;(]*?\b(\w+)\s*\(", re.S)


def declared_functions(header: str) -> list[str]:
    code = re.sub(r"//[^\n]*|/\*.*?\*/|^\s*#[^\n]*", "", header, flags=re.S | re.M)
    return sorted(set(LLAMA_API_FUNCTION.findall(code)))


def test_every_llama_api_function_is_bound(llama_cpp_dir):
    names = declared_functions((llama_cpp_dir / "include" / "llama.h").read_text())
    assert len(names) > 200, "the header scan found too few functions to be right"
    missing = [name for name in names if not hasattr(lib, name)]
    assert missing == []
    for name in names:
        assert callable(getattr(lib, name)), name


def test_every_mtmd_api_function_is_bound(llama_cpp_dir):
    """libmtmd (images, audio) is bound from its headers the same way; C++-only declarations
    (outside extern "C") cannot be, and are not looked for."""
    names = []
    for header in ("mtmd.h", "mtmd-helper.h"):
        code = (llama_cpp_dir / "tools" / "mtmd" / header).read_text()
        c_part = re.split(r"#ifdef __cplusplus\s*\n\s*}", code)[0]  # up to the end of extern "C"
        names += declared_functions(c_part.replace("MTMD_API", "LLAMA_API"))
    assert len(names) > 60, "the header scan found too few functions to be right"
    missing = [name for name in names if not callable(getattr(lib, name, None))]
    assert missing == []
    assert ffi.string(lib.mtmd_default_marker()) == b"<__media__>"


def test_header_scan_sees_deprecated_declarations():
    header = ('DEPRECATED(LLAMA_API int32_t llama_old(struct x * y), "use new");\n'
              'LLAMA_API DEPRECATED(bool llama_older(int a), "gone");\nLLAMA_API void llama_new(void);')
    assert declared_functions(header) == ["llama_new", "llama_old", "llama_older"]


def test_trivial_calls_go_through():
    assert lib.llama_max_devices() >= 1
    assert lib.llama_time_us() > 0
    assert ffi.string(lib.ggml_type_name(lib.GGML_TYPE_Q4_0)) == b"q4_0"


def test_enums_are_int_enums_matching_the_c_values():
    assert enums.VocabType.SPM == lib.LLAMA_VOCAB_TYPE_SPM
    assert enums.PoolingType.MEAN == lib.LLAMA_POOLING_TYPE_MEAN
    assert enums.GGMLType.Q8_0 == lib.GGML_TYPE_Q8_0
    assert enums.FlashAttnType.AUTO == -1
    assert enums.SplitMode(lib.LLAMA_SPLIT_MODE_LAYER).name == "LAYER"


def test_callbacks_are_declared_as_extern_python():
    for name in ("_pyllama_on_log", "_pyllama_on_progress", "_pyllama_on_abort"):
        assert hasattr(lib, name)


def test_llama_cpp_log_goes_to_python_logging(caplog, tmp_path):
    params = lib.llama_model_default_params()
    with caplog.at_level("DEBUG", logger="pyllama"):
        model = lib.llama_model_load_from_file(str(tmp_path / "missing.gguf").encode(), params)
    assert model == ffi.NULL
    assert any("missing.gguf" in record.getMessage() for record in caplog.records if record.name == "pyllama")


def test_quiet_by_default(tmp_path):
    code = textwrap.dedent(f"""
        from pyllama._binding import lib
        lib.llama_model_load_from_file({str(tmp_path / 'missing.gguf')!r}.encode(), lib.llama_model_default_params())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert without_gpu_warning(result.stderr) == "" and result.stdout == ""


def test_a_stale_compiled_module_is_refused(tmp_path):
    code = textwrap.dedent("""
        import sys, types
        sys.modules["pyllama._version"] = types.SimpleNamespace(__version__="0.0.0.stale")
        try:
            import pyllama
        except ImportError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert f"compiled module is from version {pyllama.__version__}" in result.stdout
    assert "0.0.0.stale" in result.stdout


def test_ctrl_c_inside_a_log_callback_still_reaches_the_program():
    import logging

    import pytest

    class Interrupting(logging.Handler):
        def emit(self, record):
            raise KeyboardInterrupt  # as if SIGINT arrived while the log line was handled

    logger = logging.getLogger("pyllama")
    handler = Interrupting()
    logger.addHandler(handler)
    # Python's own SIGINT handler, even where a background shell started the tests with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            lib._pyllama_on_log(lib.GGML_LOG_LEVEL_ERROR, b"an error line\n", ffi.NULL)
            deadline = time.monotonic() + 5  # the interrupt is delivered again once C has returned
            while time.monotonic() < deadline:
                pass
    finally:
        logger.removeHandler(handler)
        signal.signal(signal.SIGINT, previous)
