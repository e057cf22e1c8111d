"""Tiny random multimodal models, made with ``transformers`` and converted by the vendored converter
(no download), and the media to feed them.

A Gemma 3 vision-language model: a 2-layer SigLIP on 32x32 images in 8x8 patches, pooled to 4
image tokens, and a 2-layer Gemma 3 text model with a sentencepiece vocabulary that has Gemma's
turn and image markers as single tokens, and Gemma 3's chat template. And a Qwen2-Audio
projector (a Whisper encoder) as wide as that text model, so the same text model hears audio.
"""

from __future__ import annotations

import io
import json
import struct
import wave
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

# Gemma 3's template, as the instruction-tuned models ship it (system prompt folded into the first turn)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
SPECIAL = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
TEXT = ["describe the image in one word", "what colour is the square in the picture", "a red cat on a mat",
        "the planets of the solar system", "hello world, how are you today?"] * 20
IMAGE_SIZE, PATCH_SIZE, IMAGE_TOKENS = 32, 8, 4
TEXT_WIDTH = 64
AUDIO_RATE = 16000


def _tokenizer(folder: Path) -> int:
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT), model_writer=proto, vocab_size=384, model_type="bpe", byte_fallback=True,
        minloglevel=2, pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=SPECIAL)
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(4 + i): {"content": token, "special": True} for i, token in enumerate(SPECIAL)}}))
    return processor.get_piece_size()


def _hub_layout(path: Path) -> None:
    """Name the vision tower's tensors as Google's checkpoints do (``vision_tower.vision_model.``),
    which is what the converter maps; transformers 5 saves them one level flatter."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {("vision_tower.vision_model." + name[len("vision_tower."):]
                if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model.") else name):
               tensor for name, tensor in tensors.items()}
    save_file(renamed, path, metadata={"format": "pt"})


def _gemma3_vision(hf: Path) -> None:
    import torch
    import transformers

    vocab_size = _tokenizer(hf)
    torch.manual_seed(0)
    text = transformers.Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=2048, sliding_window=2048, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE, num_channels=3)
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=4 + SPECIAL.index("<start_of_image>"), eoi_token_index=4 + SPECIAL.index("<end_of_image>"),
        image_token_index=4 + SPECIAL.index("<image_soft_token>"))
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    _loud_projector(model)
    model.save_pretrained(hf)
    _hub_layout(hf / "model.safetensors")
    (hf / "preprocessor_config.json").write_text(json.dumps({
        "image_seq_length": IMAGE_TOKENS, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}))


def _qwen2_audio(hf: Path) -> None:
    """Qwen2-Audio's Whisper encoder (3 layers: the converter maps conv1/conv2 by layer number) and
    projector, for a text model TEXT_WIDTH wide; its own text model is not converted."""
    import torch
    import transformers

    torch.manual_seed(1)
    audio = transformers.Qwen2AudioEncoderConfig(d_model=32, encoder_layers=3, encoder_attention_heads=2,
                                                 encoder_ffn_dim=64, num_mel_bins=128, max_source_positions=1500)
    text = transformers.Qwen2Config(vocab_size=64, hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=2)
    model = transformers.Qwen2AudioForConditionalGeneration(
        transformers.Qwen2AudioConfig(audio_config=audio, text_config=text)).eval()
    _loud_projector(model)
    model.save_pretrained(hf)


def _loud_projector(model) -> None:
    """Random projector weights large enough that the media visibly moves the logits."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "multi_modal_projector" in name and parameter.dim() > 1:
                parameter.normal_(0.0, 1.0)


def _converter() -> Path:
    installed = Path(__import__("pyllama").__file__).parent / "convert" / "convert_hf_to_gguf.py"
    if installed.exists():
        return installed
    return Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"  # editable


def write_tiny_multimodal(folder: Path) -> tuple[Path, Path, Path]:
    """(text model GGUF, vision mmproj GGUF, audio mmproj GGUF) in ``folder``, F32, seeded: the
    Gemma 3 text model reads either projector's embeddings."""
    gemma, qwen = folder / "hf-gemma3", folder / "hf-qwen2-audio"
    for hf in (gemma, qwen):
        hf.mkdir(parents=True, exist_ok=True)
    _gemma3_vision(gemma)
    _qwen2_audio(qwen)
    outputs = (folder / "tiny-gemma3-vision.gguf", folder / "mmproj-tiny-gemma3-vision.gguf",
               folder / "mmproj-tiny-qwen2-audio.gguf")
    converter = _converter()
    runs = [[str(converter), str(hf), "--outtype", "f32", "--outfile", str(out), *extra]
            for hf, extra, out in zip((gemma, gemma, qwen), ([], ["--mmproj"], ["--mmproj"]), outputs)]
    # every conversion in one process: importing torch is most of the time
    script = (f"import runpy, sys\nsys.path.insert(0, {str(converter.parent)!r})\nfor sys.argv in {runs!r}:\n"
              "    runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"converting the tiny multimodal models failed:\n{result.stderr[-3000:]}")
    return outputs


def png(pixels: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes (no imaging library needed)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def square(colour: tuple[int, int, int], size: int = 32) -> np.ndarray:
    """A black image with a coloured square in the middle."""
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = colour
    return pixels


def tone(hertz: float, seconds: float = 1.0) -> np.ndarray:
    """A sine wave at AUDIO_RATE, float32 in [-0.5, 0.5]."""
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    return (0.5 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)


def wav(samples: np.ndarray) -> bytes:
    """Mono float samples as a 16-bit PCM WAV file at AUDIO_RATE."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(AUDIO_RATE)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


if __name__ == "__main__":
    print(*write_tiny_multimodal(Path(sys.argv[1])))
