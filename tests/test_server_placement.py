"""The server's placement and LoRA flags (llama-server's spellings) and its /lora-adapters routes,
over a real socket, on a tiny MoE model and a LoRA adapter the tests make."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from models import Shape, spm_vocab, write_lora
from pyllama import Llama
from server_process import running_server

PROMPT = "hello world, the solar system"
SCALES = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def moe_lora(tiny_moe, tmp_path_factory):
    """A LoRA adapter for the tiny MoE model, strong enough to change its greedy text."""
    shape = Shape()
    path = tmp_path_factory.mktemp("moe-lora") / "adapter.gguf"
    n_vocab = len(spm_vocab().tokens)
    write_lora(path, {"blk.0.attn_q.weight": (shape.n_embd, shape.n_embd), "output.weight": (n_vocab, shape.n_embd)},
               rank=4, alpha=8.0, seed=5)
    return path


@pytest.fixture(scope="module")
def expected(tiny_moe, moe_lora) -> dict[float, str]:
    """Greedy text at each adapter scale, from Llama with no placement flags."""
    with Llama(tiny_moe, n_ctx=256, seed=1) as llm:
        texts = {scale: llm(PROMPT, max_tokens=8, temperature=0, loras={str(moe_lora): scale} if scale else None)
                 ["choices"][0]["text"] for scale in SCALES}
    assert len(set(texts.values())) == len(SCALES), "each scale must give a recognisable greedy text"
    return texts


@pytest.fixture(scope="module")
def server(tiny_moe, moe_lora):
    with running_server(tiny_moe, "-ncmoe", "1", "-ot", "output=CPU", "-dev", "none", "-sm", "none",
                        "--lora", str(moe_lora), "-np", "4", "-c", "1024", "-t", "2") as base:
        yield base


def call(method: str, url: str, body=None) -> tuple[int, object]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def complete(server, **fields) -> str:
    status, body = call("POST", f"{server}/completion", {"prompt": PROMPT, "n_predict": 8, "temperature": 0, **fields})
    assert status == 200, body
    return body["content"]


def test_placement_flags_give_the_same_text(server, expected):
    assert complete(server) == expected[1.0]  # --lora applies the adapter at scale 1


def test_lora_adapters_routes(server, moe_lora, expected):
    status, listed = call("GET", f"{server}/lora-adapters")
    assert status == 200 and listed == [{"id": 0, "path": str(moe_lora), "scale": 1.0, "task_name": "",
                                         "prompt_prefix": ""}]
    try:
        for scale in SCALES:
            assert call("POST", f"{server}/lora-adapters", [{"id": 0, "scale": scale}]) == (200, {"success": True})
            assert call("GET", f"{server}/lora-adapters")[1][0]["scale"] == scale
            assert complete(server) == expected[scale]
        assert call("POST", f"{server}/lora-adapters", []) == (200, {"success": True})  # left out: scale 0
        assert complete(server) == expected[0.0]
    finally:
        call("POST", f"{server}/lora-adapters", [{"id": 0, "scale": 1}])


def test_per_request_lora_in_parallel(server, expected):
    """Requests with different adapters at once: each gets its own (they never share a decode)."""
    scales = [0.0, 1.0, 0.5, 0.0, 1.0, 0.5]
    with concurrent.futures.ThreadPoolExecutor(len(scales)) as pool:
        texts = list(pool.map(lambda s: complete(server, lora=[{"id": 0, "scale": s}]), scales))
    assert texts == [expected[s] for s in scales]
    status, body = call("POST", f"{server}/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "lora": [{"id": 0, "scale": 0.5}]})
    assert status == 200, body


@pytest.mark.parametrize("method, route, body, fragment", [
    ("POST", "/lora-adapters", [{"id": 3, "scale": 1.0}], "no such LoRA adapter"),
    ("POST", "/lora-adapters", {"id": 0, "scale": 1.0}, "array"),
    ("POST", "/lora-adapters", [{"id": 0, "scale": "high"}], "scale"),
    ("POST", "/completion", {"prompt": "hi", "lora": [{"id": 7, "scale": 1.0}]}, "'lora[0].id' is 7"),
    ("POST", "/completion", {"prompt": "hi", "lora": {"id": 0}}, "lora"),
])
def test_bad_lora_requests_are_4xx(server, method, route, body, fragment):
    status, answer = call(method, f"{server}{route}", body)
    assert 400 <= status < 500 and fragment in json.dumps(answer), answer


@pytest.mark.parametrize("flags, fragment", [
    (["-ot", "exps"], "'exps' is not PATTERN=BUFTYPE"),
    (["-ot", "exps=NPU0"], "unknown buffer type 'NPU0'"),
    (["-ot", "(=CPU"], "not a valid regular expression"),
    (["-dev", "NoSuchGPU"], "unknown device 'NoSuchGPU'"),
    (["-sm", "diagonal"], "split mode must be one of none, layer, row, tensor, not 'diagonal'"),
    (["-ncmoe", "-1"], "n_cpu_moe"),
    (["-ts", "3,x"], "proportions"),
    (["--lora", "missing.gguf"], "LoRA adapter file not found: missing.gguf"),
    (["--lora-scaled", "adapter.gguf"], "is not FNAME:SCALE"),
])
def test_bad_flags_are_one_line_errors(tiny_moe, flags, fragment):
    done = subprocess.run([sys.executable, "-m", "pyllama.server", "-m", str(tiny_moe), *flags],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and fragment in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_list_devices():
    done = subprocess.run([sys.executable, "-m", "pyllama.server", "--list-devices"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Available devices:\n"), done.stdout


def test_lora_init_without_apply(tiny_moe, moe_lora, expected):
    with running_server(tiny_moe, "--lora", str(moe_lora), "--lora-init-without-apply", "-np", "1", "-c", "256",
                        "-t", "2") as base:
        assert call("GET", f"{base}/lora-adapters")[1][0]["scale"] == 0.0
        assert complete(base) == expected[0.0]
        assert complete(base, lora=[{"id": 0, "scale": 1}]) == expected[1.0]


def test_flag_order_and_config_file(tiny_moe, moe_lora, tmp_path):
    from pyllama.server.settings import parse

    settings = parse(["-m", str(tiny_moe), "--lora-scaled", f"{moe_lora}:0.25", "--lora", str(moe_lora),
                      "-ot", r"blk\.0\.=CPU", "--override-tensor", "exps=CPU"])
    assert settings.loras == ((str(moe_lora), 0.25), (str(moe_lora), 1.0))  # ids in the order given
    assert settings.tensor_overrides == ((r"blk\.0\.", "CPU"), ("exps", "CPU"))
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": [
        {"model": str(tiny_moe), "tensor_overrides": "exps=CPU", "devices": "none", "loras": [[str(moe_lora), 0.5]]},
        {"model": str(tiny_moe), "model_alias": "two", "tensor_overrides": [["output", "CPU"]], "n_cpu_moe": 1,
         "split_mode": "none", "tensor_split": [1]}]}))
    one, two = parse(["--config", str(config)])
    assert (one.tensor_overrides, one.devices, one.loras) == ((("exps", "CPU"),), (), ((str(moe_lora), 0.5),))
    assert (two.tensor_overrides, two.n_cpu_moe, two.tensor_split) == ((("output", "CPU"),), 1, (1.0,))
    config.write_text(json.dumps({"models": [{"model": str(tiny_moe), "tensor_overrides": {"exps": "GPU"}}]}))
    with pytest.raises(SystemExit):
        parse(["--config", str(config)])
