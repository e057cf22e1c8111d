"""The pyllama command as a newcomer meets it first (issue 23): one-line errors from the source
tree, a chat that says what it does and whose defaults work together, a quantizer that names
what is true and never leaves a partial file, and server errors under the name typed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO, without_gpu_warning
from test_cli import Terminal, pyllama

from pyllama import Model


def test_python_m_pyllama_in_the_source_tree_is_one_line(tmp_path):
    """After plain ``pip install .``, ``python -m pyllama info`` in the checkout imports the sources,
    which have no compiled module: one line that says so, not a traceback about a circular import."""
    shutil.copytree(REPO / "pyllama", tmp_path / "pyllama", ignore=shutil.ignore_patterns("_pyllama_cffi*", "*.so*"))
    (tmp_path / "pyproject.toml").write_text("")
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": os.environ.get("PATH", "")}
    # -S: no site hooks (the editable install's finder would find the build); -m puts the folder first on the path
    result = subprocess.run([sys.executable, "-S", "-m", "pyllama", "info"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyllama: error: you are importing pyllama from its source directory")
    assert "run Python from another folder" in lines[0]


def test_text_chat_has_a_banner_a_prompt_and_never_glues_your_text(tiny_spm):
    # no -n: a reply ends after the default length and the turn comes back (it used to run until Ctrl-C)
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-c", "1024", "-p", "once upon a time", "--ignore-eos",
                    "--temp", "0.9", "-s", "1")
    term.read_until("continues what you write")
    assert "Ctrl-D quits" in term.screen
    term.read_until("\n> ", timeout=120)
    term.type("hello there\n")
    term.read_until("\n> ", count=2, timeout=120)
    lines = term.screen.replace("\r\n", "\n").split("\n")
    assert "> hello there" in lines  # on a line of its own after the model's text, behind the prompt
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0


def test_conversation_defaults_work_and_a_full_context_drops_old_turns(tiny_spm):
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-cnv", "--temp", "0.9", "-s", "2", "--ignore-eos")
    term.read_until("through its chat template")
    term.read_until("note: the model has no chat template")  # the tiny model has none: chatml, said so
    term.read_until("\n> ")
    term.type("hello\n")
    term.read_until("\n> ", count=2, timeout=120)  # the first message fits with the default -c and -n
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0

    # replies of 40 tokens in a context of 128: the conversation outgrows it from the second turn on
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-cnv", "-c", "128", "-n", "40", "--ignore-eos", "--temp", "0.9",
                    "-s", "3")
    term.read_until("\n> ")
    for turn in range(2, 6):
        term.type("tell me about the planets of the solar system\n")
        term.read_until("\n> ", count=turn, timeout=120)
    assert "write less" not in term.screen and term.process.poll() is None  # old turns made room
    term.type(" ".join(["planets"] * 150) + "\n")  # one message larger than the context: said, then go on
    term.read_until("write less, or start with a larger -c", timeout=60)
    term.read_until("\n> ", count=6, timeout=60)
    assert term.process.poll() is None
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0


def test_requantizing_names_the_model_type_and_leaves_no_file(tiny_spm, tmp_path):
    q4 = tmp_path / "q4.gguf"
    assert pyllama("quantize", str(tiny_spm[0]), str(q4), "Q4_0").returncode == 0
    again = tmp_path / "again.gguf"
    result = pyllama("quantize", str(q4), str(again), "q8_0")
    assert result.returncode == 1
    lines = without_gpu_warning(result.stderr).strip().splitlines()
    assert len(lines) == 1 and "is already quantized (Q4_0)" in lines[0] and "--allow-requantize" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q4.gguf"]  # no partial file, no output
    result = pyllama("quantize", "--allow-requantize", str(q4), str(again), "q8_0")
    assert result.returncode == 0, result.stderr
    with Model(again) as model:
        assert model.file_type.name == "MOSTLY_Q8_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.gguf", "q4.gguf"]


def test_quantize_help_gives_bits_per_weight_for_the_mixes():
    help_text = pyllama("quantize", "--help").stdout
    for name, bpw in (("IQ3_XS", "3.44"), ("IQ3_M", "3.44"), ("IQ2_M", "2.56"), ("IQ2_S", "2.31")):
        line = next(line for line in help_text.splitlines() if f" {name} " in line)
        assert f"{bpw} bpw" in line, line


def test_bench_uses_the_cpus_available(tiny_spm):
    result = pyllama("bench", "-m", str(tiny_spm[0]), "-p", "16", "-n", "4", "-r", "1", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert {row["threads"] for row in json.loads(result.stdout)} == {len(os.sched_getaffinity(0))}


def test_serve_errors_name_pyllama_serve_and_a_busy_port_suggests_port(tiny_spm):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = pyllama("serve", "--model", str(tiny_spm[0]), "--port", str(port), timeout=120)
    assert result.returncode == 1
    lines = without_gpu_warning(result.stderr).strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pyllama serve: cannot listen on 127.0.0.1 port {port}: ")
    assert lines[0].endswith("; choose another with --port")
    bad = pyllama("serve", "--model", "/no/such/model.gguf")
    assert without_gpu_warning(bad.stderr).startswith("pyllama serve: error: ")


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_model_help_names_an_install_command_that_exists(command):
    help_text = pyllama(command, "--help").stdout.replace("\n", "")
    assert "gemma3-" in help_text and "cffi[demo]" not in help_text
