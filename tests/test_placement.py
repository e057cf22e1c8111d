"""Tensor placement (llama-server's -ot, --cpu-moe, --n-cpu-moe, -dev) as llama.cpp's loader reports it.

On a CPU-only machine every tensor lives in the CPU buffer type anyway; what shows that an
override reached llama.cpp is the loader's line for each tensor it moved.
"""

from __future__ import annotations

import gc
import logging
import re
import subprocess
import sys

import pytest

from pyllama import Llama, Model
from pyllama.placement import buffer_types, offload_devices, parse_overrides

OVERRIDDEN = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to (\S+)")


def overridden(caplog, path, **placement) -> dict[str, str]:
    """tensor name -> buffer type, for each tensor the loader says an override moved (a CPU that
    repacks weights for its own kernels names a CPU_* variant: that is the CPU too)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pyllama"):
        with Model(path, **placement):
            pass
    found = (OVERRIDDEN.search(record.getMessage()) for record in caplog.records)
    return {m[1]: "CPU" if m[2].startswith("CPU") else m[2] for m in found if m}


def experts(layers) -> set[str]:
    return {f"blk.{i}.ffn_{kind}_exps.weight" for i in layers for kind in ("gate", "up", "down")}


def test_cpu_is_a_buffer_type():
    assert "CPU" in buffer_types()
    assert "CPU" not in offload_devices()  # the CPU always holds what no device takes


def test_pattern_sends_matching_tensors_to_the_buffer_type(caplog, tiny_spm):
    moved = overridden(caplog, tiny_spm[0], tensor_overrides={r"blk\.1\.ffn_(up|down)": "CPU"})
    assert moved == {"blk.1.ffn_up.weight": "CPU", "blk.1.ffn_down.weight": "CPU"}
    assert overridden(caplog, tiny_spm[0]) == {}


def test_first_matching_pattern_wins(caplog, tiny_spm):
    moved = overridden(caplog, tiny_spm[0], tensor_overrides=[(r"attn_q", "CPU"), (r"blk\.0\.", "CPU")])
    assert set(moved) == {"blk.0.attn_q.weight", "blk.1.attn_q.weight"} | {
        f"blk.0.{name}.weight" for name in ("attn_norm", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                                             "ffn_up", "ffn_down")}


def test_cpu_moe_keeps_every_expert_on_the_cpu(caplog, tiny_moe):
    assert overridden(caplog, tiny_moe, cpu_moe=True) == dict.fromkeys(experts(range(3)), "CPU")
    assert overridden(caplog, tiny_moe, n_cpu_moe=2) == dict.fromkeys(experts(range(2)), "CPU")
    assert overridden(caplog, tiny_moe, n_cpu_moe=0) == {}


def test_cpu_moe_gives_the_same_greedy_text(tiny_moe):
    texts = []
    for placement in ({}, {"cpu_moe": True}, {"n_cpu_moe": 1, "tensor_overrides": {"output": "CPU"}}):
        with Llama(tiny_moe, n_ctx=128, seed=1, **placement) as llm:
            gc.collect()  # the override arrays must outlive the load, not just the call
            texts.append(llm("hello world", max_tokens=12, temperature=0)["choices"][0]["text"])
    assert texts[0] and texts[1:] == texts[:1] * 2


def test_no_offload_devices(tiny_spm):
    with Model(tiny_spm[0], devices=[], n_gpu_layers=-1) as model:
        assert model.n_layer == 2


@pytest.mark.parametrize("placement, message", [
    ({"tensor_overrides": {"ffn_up": "NPU9"}}, r"unknown buffer type 'NPU9'.*CPU"),
    ({"tensor_overrides": {"ffn_(up": "CPU"}}, r"'ffn_\(up' is not a valid regular expression"),
    ({"tensor_overrides": {"(?i)FFN_UP": "CPU"}}, r"ECMAScript"),  # llama.cpp's std::regex would refuse it
    ({"tensor_overrides": [("ffn_up",)]}, r"pair"),
    ({"n_cpu_moe": -1}, r"n_cpu_moe .* not -1"),
    ({"devices": ["NoSuchGPU0"]}, r"unknown device 'NoSuchGPU0'; this machine has"),
    ({"devices": ["CPU"]}, r"unknown device 'CPU'"),
    ({"devices": "CUDA0"}, r"list of device names"),
])
def test_bad_placement_is_a_clear_error(tiny_spm, placement, message):
    with pytest.raises(ValueError, match=message):
        Model(tiny_spm[0], **placement)


def test_parse_overrides_takes_llama_servers_spelling():
    assert parse_overrides(r"blk\.0\.=CPU,exps=CPU") == [(r"blk\.0\.", "CPU"), ("exps", "CPU")]
    with pytest.raises(ValueError, match="'exps' is not PATTERN=BUFTYPE"):
        parse_overrides("exps")


def test_fit_counts_layers_from_the_last_without_what_overrides_pin_elsewhere():
    from pyllama.cli.fit import Weights

    sizes = {f"blk.{i}.{name}": size for i in range(4) for name, size in (("attn_q.weight", 10), ("ffn_up_exps", 20))}
    sizes |= {"token_embd.weight": 15, "output.weight": 5}
    plain = Weights.of(sizes, 4)
    assert (plain.layers, plain.outside, plain.pinned) == ([30] * 4, 20, {})
    assert plain.layers_that_fit(free=100, kv_per_layer=2, buffer_type="CUDA0") == 3
    moe = Weights.of(sizes, 4, [(r"blk\.[01]\.ffn_up_exps", "CPU"), ("output", "CUDA0")])
    assert (moe.layers, moe.outside, moe.pinned) == ([10, 10, 30, 30], 15, {"CPU": 40, "CUDA0": 5})
    assert moe.layers_that_fit(free=90, kv_per_layer=2, buffer_type="CUDA0") == 3  # 5 pinned, then 32+32+12
    assert moe.layers_that_fit(free=100, kv_per_layer=2, buffer_type="CUDA0") == 4  # 7 left: not the 15 outside
    assert moe.layers_that_fit(free=120, kv_per_layer=2, buffer_type="CUDA0") == -1
    cpu_moe = Weights.of(sizes, 4, [(r"ffn_up_exps", "CPU")])
    assert cpu_moe.layers_that_fit(free=100, kv_per_layer=2, buffer_type="CUDA0") == -1


def test_fit_command_takes_the_overrides(tiny_moe, capsys):
    from pyllama.cli import main
    from pyllama.gguf_check import tensor_sizes

    experts = sum(size for name, size in tensor_sizes(tiny_moe).items() if "_exps" in name)
    for flags in (["--cpu-moe"], ["-ot", r"ffn_up_exps=CPU,ffn_(gate|down)_exps=CPU"], ["-ncmoe", "3"]):
        assert main(["fit", "-m", str(tiny_moe), "-c", "256", *flags]) == 0
        assert f"pinned by tensor overrides: {experts / 2**20:.1f} MiB to CPU" in capsys.readouterr().out
    assert main(["fit", "-m", str(tiny_moe), "-ot", "exps=NPU"]) == 1
    assert "unknown buffer type 'NPU'" in capsys.readouterr().err


def test_cli_flags_give_the_same_text_and_one_line_errors(tiny_moe):
    def complete(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pyllama", "complete", "-m", str(tiny_moe), "-p", "hello world",
                               "-n", "8", "--temp", "0", "-s", "1", *flags], capture_output=True, timeout=120)

    plain = complete()
    assert plain.returncode == 0 and plain.stdout
    for flags in (["--cpu-moe"], ["-ncmoe", "2", "-ot", "output=CPU", "-dev", "none", "-sm", "none", "-ts", "1"]):
        assert complete(*flags).stdout == plain.stdout
    for flags, message in ((["-ot", "exps=NPU"], "unknown buffer type 'NPU'"), (["-sm", "wide"], "split mode"),
                           (["-dev", "NoSuchGPU"], "unknown device 'NoSuchGPU'")):
        failed = complete(*flags)
        stderr = failed.stderr.decode()
        assert failed.returncode == 1 and message in stderr and stderr.count("\n") == 1, stderr
