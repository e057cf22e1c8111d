"""llama.cpp's C enums as Python ``IntEnum`` classes.

Generated from the compiled module's own type information, so they always match
the llama.cpp that was built: ``VocabType.SPM == lib.LLAMA_VOCAB_TYPE_SPM``.
"""

from __future__ import annotations

import enum

from ._binding import ffi


def _from_c(name: str, c_enum: str, prefix: str) -> type[enum.IntEnum]:
    elements = ffi.typeof(f"enum {c_enum}").relements
    members = {key[len(prefix):]: value for key, value in elements.items() if key.startswith(prefix)}
    return enum.IntEnum(name, members, module=__name__)  # type: ignore[return-value]


VocabType = _from_c("VocabType", "llama_vocab_type", "LLAMA_VOCAB_TYPE_")
RopeType = _from_c("RopeType", "llama_rope_type", "LLAMA_ROPE_TYPE_")
TokenType = _from_c("TokenType", "llama_token_type", "LLAMA_TOKEN_TYPE_")
TokenAttr = _from_c("TokenAttr", "llama_token_attr", "LLAMA_TOKEN_ATTR_")
FileType = _from_c("FileType", "llama_ftype", "LLAMA_FTYPE_")
RopeScalingType = _from_c("RopeScalingType", "llama_rope_scaling_type", "LLAMA_ROPE_SCALING_TYPE_")
PoolingType = _from_c("PoolingType", "llama_pooling_type", "LLAMA_POOLING_TYPE_")
AttentionType = _from_c("AttentionType", "llama_attention_type", "LLAMA_ATTENTION_TYPE_")
FlashAttnType = _from_c("FlashAttnType", "llama_flash_attn_type", "LLAMA_FLASH_ATTN_TYPE_")
SplitMode = _from_c("SplitMode", "llama_split_mode", "LLAMA_SPLIT_MODE_")
ModelKvOverrideType = _from_c("ModelKvOverrideType", "llama_model_kv_override_type", "LLAMA_KV_OVERRIDE_TYPE_")
GGMLType = _from_c("GGMLType", "ggml_type", "GGML_TYPE_")
LogLevel = _from_c("LogLevel", "ggml_log_level", "GGML_LOG_LEVEL_")
DeviceType = _from_c("DeviceType", "ggml_backend_dev_type", "GGML_BACKEND_DEVICE_TYPE_")
NumaStrategy = _from_c("NumaStrategy", "ggml_numa_strategy", "GGML_NUMA_STRATEGY_")

__all__ = [
    "VocabType", "RopeType", "TokenType", "TokenAttr", "FileType", "RopeScalingType",
    "PoolingType", "AttentionType", "FlashAttnType", "SplitMode", "ModelKvOverrideType",
    "GGMLType", "LogLevel", "DeviceType", "NumaStrategy",
]
