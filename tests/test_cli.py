"""The pyllama command: each subcommand run as a user would, errors as one line."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from conftest import without_gpu_warning
from models import reference_logits
from pyllama import Model

WORDS = "the planets of the solar system are one day bob said hello world what are you it is a name and to in".split()


def pyllama(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyllama", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(" ".join(rng.choice(WORDS, 700)))
    return path


def test_complete_prints_text_and_timings(tiny_spm):
    result = pyllama("complete", "-m", str(tiny_spm[0]), "-p", "hello world", "-n", "8", "--temp", "0", "-t", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello world")
    assert "prompt eval time" in result.stderr and "tokens per second" in result.stderr


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q5_1", "F16", "q4_1"])
def test_quantize_produces_a_loadable_model(tiny_spm, tmp_path, kind):
    out = tmp_path / f"{kind}.gguf"
    result = pyllama("quantize", str(tiny_spm[0]), str(out), kind)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size < tiny_spm[0].stat().st_size
    with Model(out) as model:
        assert model.file_type.name.endswith(kind.upper())


def test_quantize_help_lists_every_type():
    result = pyllama("quantize", "--help")
    for name in ("Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "IQ2_XXS", "IQ4_NL", "F16", "BF16"):
        assert f" {name} " in result.stdout
    assert "4.50 bpw" in result.stdout


def test_perplexity_matches_a_numpy_reference(tiny_spm, text_file):
    n_ctx = 64
    result = pyllama("perplexity", "-m", str(tiny_spm[0]), "-f", str(text_file), "-c", str(n_ctx), "-t", "2")
    assert result.returncode == 0, result.stderr
    final = next(line for line in result.stdout.splitlines() if line.startswith("Final estimate"))
    ppl = float(final.split("=")[1].split("+/-")[0])
    with Model(tiny_spm[0], vocab_only=True) as model:
        tokens = model.tokenize(text_file.read_text())
    nll, count = 0.0, 0
    for chunk in range(len(tokens) // n_ctx):
        window = tokens[chunk * n_ctx:(chunk + 1) * n_ctx]
        targets = window[n_ctx // 2 + 1:]
        logits = reference_logits(tiny_spm[1], [1] + window[1:])[n_ctx // 2:-1]
        log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - \
            logits.max(1, keepdims=True)
        nll -= log_probs[np.arange(len(targets)), targets].sum()
        count += len(targets)
    assert ppl == pytest.approx(np.exp(nll / count), rel=0.01)


def test_bench_formats(tiny_spm):
    md = pyllama("bench", "-m", str(tiny_spm[0]), "-p", "32", "-n", "8", "-r", "1", "-t", "2")
    assert md.returncode == 0 and "| pp32 |" in md.stdout and "| tg8 |" in md.stdout
    rows = json.loads(pyllama("bench", "-m", str(tiny_spm[0]), "-p", "32", "-n", "8", "-r", "1", "-o", "json").stdout)
    assert [r["test"] for r in rows] == ["pp32", "tg8"] and all(r["avg_ts"] > 0 for r in rows)
    table = list(csv.DictReader(io.StringIO(
        pyllama("bench", "-m", str(tiny_spm[0]), "-p", "32", "-n", "0", "-r", "1", "-o", "csv").stdout)))
    assert table[0]["test"] == "pp32"


def test_speculative_reports_acceptance(tiny_spm):
    result = pyllama("speculative", "-m", str(tiny_spm[0]), "-md", str(tiny_spm[0]), "-p", "one day", "-e", "-n", "24",
                     "--temp", "0", "-c", "256")
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stderr and "tokens/s" in result.stderr
    assert result.stdout.startswith("one day")


def test_fit_and_info(tiny_spm):
    fit = pyllama("fit", "-m", str(tiny_spm[0]), "-c", "512")
    assert fit.returncode == 0 and "2 layers" in fit.stdout
    assert pyllama("info").returncode == 0


@pytest.mark.parametrize("args, code, fragment", [
    (["complete", "-m", "/no/such/model.gguf", "-p", "x"], 1, "not found"),
    (["quantize", "IN", "OUT"], 2, "required"),
    (["complete", "--bogus", "-m", "x"], 2, "unrecognized"),
    (["nonsense"], 2, "invalid choice"),
    (["complete", "-m", "x.gguf", "-f", "/no/such/prompt.txt"], 1, "error: /no/such/prompt.txt: No such file"),
    (["complete", "-m", "x.gguf", "-f", "/"], 1, "error: /: Is a directory"),
    (["fit", "-m", "/no/such/model.gguf"], 1, "error: /no/such/model.gguf: No such file or directory"),
    (["complete", "-m", "x.gguf", "-c", "-5"], 2, "argument -c/--ctx-size: must be at least 0, not -5"),
    (["chat", "-m", "x.gguf", "-b", "0"], 2, "argument -b/--batch-size: must be at least 1, not 0"),
    (["bench", "-m", "x.gguf", "-r", "0"], 2, "argument -r/--repetitions: must be at least 1, not 0"),
    (["fit", "-m", "x.gguf", "-c", "many"], 2, "argument -c/--ctx-size: invalid int value: 'many'"),
    (["quantize", "{model}", "/no/such/folder/out.gguf", "q8_0"], 1, "the folder for /no/such/folder/out.gguf does not"),
    (["serve", "--model", "/no/such/model.gguf"], 2, "model file not found: /no/such/model.gguf (--help lists"),
    (["serve", "--model", "{model}", "-ctk", "q3"], 2, "--cache-type-k must be one of"),
    (["serve", "--ray", "--replicas", "3", "--max-replicas", "2", "--model", "{model}"], 2,
     "expected 1 <= --replicas <= --max-replicas, got 3 and 2"),
])
def test_errors_are_one_line(args, code, fragment, tiny_spm):
    result = pyllama(*(a.format(model=tiny_spm[0]) for a in args))
    assert result.returncode == code
    lines = without_gpu_warning(result.stderr).strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("command, blocked, extra", [
    (["serve", "--model", "m.gguf"], "fastapi", "server"),
    (["serve", "--ray", "--replicas", "2", "--model", "m.gguf"], "ray", "ray"),
    (["convert", "hf-folder", "--outfile", "m.gguf"], "torch", "convert"),
])
def test_a_missing_extra_is_named_in_one_line(command, blocked, extra, monkeypatch, capsys):
    from pyllama.cli import main

    monkeypatch.setitem(sys.modules, blocked, None)  # as if it were not installed
    assert main(command) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyllama {command[0]}: error: {blocked} ")
    assert lines[0].endswith(f" not installed: pip install 'pyllama-cffi[{extra}]'")


def test_serve_ray_help_lists_its_options_then_the_server_flags():
    result = pyllama("serve", "--ray", "--help")
    assert result.returncode == 0, result.stderr
    ray_part, _, server_part = result.stdout.partition("SERVER_FLAGS, for every replica")
    assert "--replicas" in ray_part and "--max-replicas" in ray_part and "--routing" in ray_part
    assert "--model" in server_part and "--parallel" in server_part


@pytest.mark.parametrize("command, expected", [
    (["--replicas", "2"], {"num_replicas": 2}),
    (["--replicas", "1", "--max-replicas", "4", "--replica-cpus", "8"],
     {"ray_actor_options": {"num_cpus": 8.0}, "autoscaling_config": {"min_replicas": 1, "max_replicas": 4,
                                                                     "target_ongoing_requests": 3}}),
])
def test_serve_ray_options_become_rays_deployment_options(command, expected):
    from pyllama.ray.serve import _parser, deployment_options

    options, _ = _parser("pyllama serve").parse_known_args(["--ray", *command, "-m", "m.gguf"])
    assert deployment_options(options, n_parallel=3) == expected


def test_unknown_quant_type(tiny_spm, tmp_path):
    result = pyllama("quantize", str(tiny_spm[0]), str(tmp_path / "x.gguf"), "Q9_Z")
    assert result.returncode == 1 and "unknown quantization type" in result.stderr


class Terminal:
    """The program on a pseudo-terminal, as a person would run it."""

    def __init__(self, *args: str) -> None:
        self.leader, follower = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-m", "pyllama", *args], stdin=follower, stdout=follower,
                                        stderr=follower, close_fds=True, preexec_fn=self._controlling_terminal)
        os.close(follower)
        self.screen = ""

    @staticmethod
    def _controlling_terminal() -> None:
        """In the child: a new session whose controlling terminal is the pty, so Ctrl-C is a SIGINT
        (not ignored, as it is when the tests themselves run in the background of a shell)."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def read_until(self, text: str, timeout: float = 60, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while self.screen.count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} never appeared; the screen shows {self.screen[-500:]!r}")
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.leader, 4096).decode("utf-8", "replace")
                except OSError:
                    break
        return self.screen

    def settle(self, quiet: float = 2.0) -> str:
        """Read until nothing more arrives for ``quiet`` seconds (long enough for a reply to start)."""
        while select.select([self.leader], [], [], quiet)[0]:
            try:
                self.screen += os.read(self.leader, 4096).decode("utf-8", "replace")
            except OSError:
                break
        return self.screen

    def type(self, keys: str) -> None:
        os.write(self.leader, keys.encode())


def test_interactive_chat_with_reverse_prompt_and_ctrl_c(tiny_spm):
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-c", "256", "--keep", "8", "-i", "-r", "User:",
                    "-p", "Bob is helpful.\nUser: hi\nBob:", "--temp", "0.9", "-s", "3", "-n", "12", "--color")
    term.read_until("Bob is helpful.")
    term.read_until("User:", timeout=60)  # the reply ended (12 tokens) and the turn came back with the reverse prompt
    term.type("tell me about the planets\n")
    time.sleep(0.5)
    assert term.process.poll() is None
    term.type("\x04")  # Ctrl-D at the prompt ends the program
    assert term.process.wait(timeout=30) == 0


def test_a_prompt_ending_in_the_reverse_prompt_waits_for_the_user(tiny_spm, tmp_path):
    """As llama.cpp's interactive mode: the transcript ends with "User:" (the file's final newline
    is dropped, as -f does), so the turn is the user's at once, with no invented user line."""
    transcript = "Bob is helpful.\nUser: Hello, Bob.\nBob: Hello. How may I help you today?\nUser:"
    (tmp_path / "chat.txt").write_text(transcript + "\n")
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-c", "256", "-n", "12", "--keep", "8", "-i", "-r", "User:",
                    "-f", str(tmp_path / "chat.txt"), "--temp", "0.9", "-s", "3", "--ignore-eos")
    term.read_until("today?")
    assert term.settle().replace("\r\n", "\n").endswith(transcript)  # nothing was generated
    term.type("what is the plan\n")  # the reply comes after the user's line, and the turn comes back
    term.read_until("User:", count=3)
    assert term.process.poll() is None
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0


@pytest.mark.parametrize("text, reverse, waits", [
    ("Bob: hi\nUser:", ["User:"], True),
    ("Bob: hi\nUser: ", ["User:"], False),  # llama.cpp matches the very end, so no trailing space
    ("Bob: hi\nUser:", ["Alice:", "User:"], True),
    ("Bob: hi\nUser:", [], False),
    ("Bob: hi\nUser:", [""], False),
])
def test_which_prompts_give_the_turn_at_once(text, reverse, waits):
    from pyllama.cli.chat import ends_with_reverse_prompt

    assert ends_with_reverse_prompt(text, reverse) is waits


def test_a_prompt_file_loses_one_final_newline_as_in_llama_cpp(tmp_path):
    import argparse

    from pyllama.cli._options import prompt_of

    for text, prompt in (("User:\n", "User:"), ("User:\n\n", "User:\n"), ("User:", "User:"), ("", "")):
        (tmp_path / "p.txt").write_text(text)
        assert prompt_of(argparse.Namespace(file=str(tmp_path / "p.txt"), prompt="")) == prompt


def test_ctrl_c_stops_the_reply_not_the_program(tiny_spm):
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-c", "256", "--keep", "8", "-p", "once upon a time",
                    "-n", "-1", "--temp", "1.0", "--ignore-eos")  # no reverse prompt, shifting: it never stops
    term.read_until("once upon a time")
    time.sleep(1.0)
    term.type("\x03")
    term.read_until("[stopped]")
    assert term.process.poll() is None
    term.type("and then\n")  # still alive: a second reply starts, and stops the same way
    time.sleep(1.0)
    term.type("\x03")
    term.read_until("[stopped]", timeout=30, count=2)
    assert term.screen.count("[stopped]") == 2
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0


def test_instruct_mode_chats_through_the_template(tiny_spm):
    term = Terminal("chat", "-m", str(tiny_spm[0]), "-ins", "-n", "8", "-c", "512", "--temp", "0")
    term.read_until("> ")
    term.type("hello there\n")
    term.read_until("> ", count=2)  # a reply came and the next turn is offered
    term.type("\x04")
    assert term.process.wait(timeout=30) == 0


def test_quantize_with_an_importance_matrix(tiny_spm, tmp_path):
    import gguf

    imatrix = tmp_path / "imatrix.gguf"
    writer = gguf.GGUFWriter(str(imatrix), "llama")
    writer.add_string("general.type", "imatrix")
    rng = np.random.default_rng(1)
    for name, weight in tiny_spm[1].items():
        if name.startswith("blk.") and weight.ndim == 2:
            writer.add_tensor(f"{name}.in_sum2", (rng.random((1, weight.shape[1])) * 50).astype(np.float32))
            writer.add_tensor(f"{name}.counts", np.array([10.0], dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "weighted.gguf"
    assert pyllama("quantize", str(tiny_spm[0]), str(plain), "Q4_0").returncode == 0
    result = pyllama("quantize", "--imatrix", str(imatrix), str(tiny_spm[0]), str(weighted), "Q4_0")
    assert result.returncode == 0, result.stderr
    assert "imatrix: 14 weights" in result.stdout and "MiB, Q4_0)" in result.stdout
    assert plain.read_bytes() != weighted.read_bytes()  # the importance changed how blocks were rounded
    with Model(weighted) as model:
        assert model.file_type.name == "MOSTLY_Q4_0"
    bad = pyllama("quantize", "--imatrix", str(tiny_spm[0]), str(tiny_spm[0]), str(tmp_path / "x.gguf"), "Q4_0")
    assert bad.returncode == 1 and "no importance data" in bad.stderr


def test_quantize_shows_progress_on_a_terminal(tiny_spm, tmp_path):
    term = Terminal("quantize", str(tiny_spm[0]), str(tmp_path / "q.gguf"), "Q8_0")
    term.read_until("100%")
    assert "quantizing to Q8_0 [" in term.screen
    assert term.process.wait(timeout=60) == 0


def test_the_server_without_its_extra_says_which(monkeypatch, capsys):
    from pyllama.server.__main__ import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["--model", "m.gguf"]) == 1
    assert capsys.readouterr().err.strip() == ("python -m pyllama.server: uvicorn is not installed: "
                                               "pip install 'pyllama-cffi[server]'")


def test_importing_the_source_tree_says_so(tmp_path):
    """A checkout installed with plain ``pip install .`` and imported from its own folder finds
    the sources, which have no compiled module: the error must say that, not "reinstall"."""
    import shutil
    import sysconfig

    from conftest import REPO

    shutil.copytree(REPO / "pyllama", tmp_path / "pyllama", ignore=shutil.ignore_patterns("_pyllama_cffi*", "*.so*"))
    (tmp_path / "pyproject.toml").write_text("")
    # -S: no site hooks (the editable install's finder would find the build); dependencies by path
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, ''); import pyllama"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "you are importing pyllama from its source directory" in result.stderr
    assert "pip install -e ." in result.stderr and "Reinstall" not in result.stderr
