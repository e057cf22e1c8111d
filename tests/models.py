"""Tiny GGUF models made by the tests themselves, and a numpy forward pass to check them.

Random weights with a fixed seed, llama architecture, two tokenizer kinds:
a sentencepiece-style vocab with byte fallback, and a GPT-2 style byte-level BPE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import numpy as np

WORDS = [
    "the", "a", "is", "of", "and", "to", "in", "hello", "world", "name", "planets", "solar",
    "system", "Q", "A", "one", "day", "bob", "user", "said", "what", "are", "you", "it",
]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()-") + ["你", "好", "世", "界"]


@dataclasses.dataclass(frozen=True)
class Shape:
    n_vocab_extra: int = 0
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_layer: int = 2
    n_ff: int = 128
    n_ctx_train: int = 512
    rope_base: float = 10000.0
    rms_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What a GGUF says about its tokenizer."""

    model: str  # "llama" (sentencepiece-style) or "gpt2" (byte-level BPE)
    tokens: list[str]
    types: list[int]
    bos: int
    eos: int
    add_bos: bool
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    unk: int | None = None


def spm_vocab(extra: int = 0) -> Vocabulary:
    """``extra`` pads the vocabulary with filler words, to give benchmarks a realistic vocab size."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    pieces = ["▁"] + CHARS + ["▁" + w for w in WORDS] + ["▁你好", "世界"] + [f"▁w{i}" for i in range(extra)]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # sentencepiece merges the best-scoring pair first: prefer longer pieces
    scores = [0.0] * 259 + [len(p) - i * 1e-3 for i, p in enumerate(pieces)]
    return Vocabulary("llama", tokens, [int(t) for t in types], bos=1, eos=2, add_bos=True, scores=scores, unk=0)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of bytes to printable characters, which byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def bpe_vocab() -> Vocabulary:
    byte_char = bytes_to_unicode()
    tokens = [byte_char[b] for b in range(256)]
    merges: list[str] = []
    known = set(tokens)
    for word in WORDS + ["你好", "世界"]:
        symbols = [byte_char[b] for b in (" " + word).encode()]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            if merged not in known:
                merges.append(f"{symbols[0]} {symbols[1]}")
                tokens.append(merged)
                known.add(merged)
            symbols = [merged] + symbols[2:]
    tokens.append("<|endoftext|>")
    types = [int(gguf.TokenType.NORMAL)] * (len(tokens) - 1) + [int(gguf.TokenType.CONTROL)]
    end = len(tokens) - 1
    return Vocabulary("gpt2", tokens, types, bos=end, eos=end, add_bos=False, merges=merges, pre="gpt-2")


def _weights(shape: Shape, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head_dim = shape.n_embd // shape.n_head

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {
        "token_embd.weight": rng.standard_normal((n_vocab, shape.n_embd)).astype(np.float32),
        "output_norm.weight": norm(shape.n_embd),
        "output.weight": matrix(n_vocab, shape.n_embd),
    }
    for i in range(shape.n_layer):
        w |= {
            f"blk.{i}.attn_norm.weight": norm(shape.n_embd),
            f"blk.{i}.attn_q.weight": matrix(shape.n_head * head_dim, shape.n_embd),
            f"blk.{i}.attn_k.weight": matrix(shape.n_head_kv * head_dim, shape.n_embd),
            f"blk.{i}.attn_v.weight": matrix(shape.n_head_kv * head_dim, shape.n_embd),
            f"blk.{i}.attn_output.weight": matrix(shape.n_embd, shape.n_head * head_dim),
            f"blk.{i}.ffn_norm.weight": norm(shape.n_embd),
            f"blk.{i}.ffn_gate.weight": matrix(shape.n_ff, shape.n_embd),
            f"blk.{i}.ffn_up.weight": matrix(shape.n_ff, shape.n_embd),
            f"blk.{i}.ffn_down.weight": matrix(shape.n_embd, shape.n_ff),
        }
    return w


def write_vocab(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    if vocab.unk is not None:
        writer.add_unk_token_id(vocab.unk)
    writer.add_add_bos_token(vocab.add_bos)


def _experts(weights: dict[str, np.ndarray], shape: Shape, n_expert: int, seed: int) -> dict[str, np.ndarray]:
    """The dense FFN of each layer replaced by ``n_expert`` experts and a router (Mixtral's layout)."""
    rng = np.random.default_rng(seed + 1000)
    moe = {k: v for k, v in weights.items() if not k.endswith(("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"))}
    for i in range(shape.n_layer):
        moe |= {
            f"blk.{i}.ffn_gate_inp.weight": rng.standard_normal((n_expert, shape.n_embd)).astype(np.float32),
            f"blk.{i}.ffn_gate_exps.weight": (rng.standard_normal((n_expert, shape.n_ff, shape.n_embd))
                                              / np.sqrt(shape.n_embd)).astype(np.float32),
            f"blk.{i}.ffn_up_exps.weight": (rng.standard_normal((n_expert, shape.n_ff, shape.n_embd))
                                            / np.sqrt(shape.n_embd)).astype(np.float32),
            f"blk.{i}.ffn_down_exps.weight": (rng.standard_normal((n_expert, shape.n_embd, shape.n_ff))
                                              / np.sqrt(shape.n_ff)).astype(np.float32),
        }
    return moe


def write_llama(path: Path, vocab: Vocabulary | str = "spm", shape: Shape = Shape(), seed: int = 0,
                chat_template: str | None = None, name: str = "tiny-llama", n_expert: int = 0,
                n_expert_used: int = 2) -> dict[str, np.ndarray]:
    """Write a tiny llama GGUF (F32) and return its weights for the numpy reference (which knows
    no experts: with ``n_expert``, a Mixture-of-Experts model for placement tests)."""
    if isinstance(vocab, str):
        vocab = spm_vocab(shape.n_vocab_extra) if vocab == "spm" else bpe_vocab()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_rope_freq_base(shape.rope_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    write_vocab(writer, vocab)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    weights = _weights(shape, len(vocab.tokens), seed)
    if n_expert:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
        weights = _experts(weights, shape, n_expert, seed)
    for name_, array in weights.items():
        writer.add_tensor(name_, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def write_lora(path: Path, targets: dict[str, tuple[int, int]], rank: int = 4, alpha: float = 8.0,
               seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A LoRA adapter GGUF for the tiny llama: ``targets`` maps weight names to their (out, in)
    shapes; returns name -> (A (rank, in), B (out, rank))."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    pairs = {}
    for name, (rows, cols) in targets.items():
        a = (rng.standard_normal((rank, cols)) / np.sqrt(cols)).astype(np.float32)
        b = (rng.standard_normal((rows, rank)) / np.sqrt(rank)).astype(np.float32)
        writer.add_tensor(name.replace(".weight", ".weight.lora_a"), a)
        writer.add_tensor(name.replace(".weight", ".weight.lora_b"), b)
        pairs[name] = (a, b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return pairs


def with_lora(weights: dict[str, np.ndarray], pairs: dict[str, tuple[np.ndarray, np.ndarray]], scale: float,
              alpha: float = 8.0) -> dict[str, np.ndarray]:
    """The weights a LoRA at ``scale`` amounts to: W + scale * alpha / rank * B @ A."""
    merged = dict(weights)
    for name, (a, b) in pairs.items():
        merged[name] = weights[name] + scale * alpha / a.shape[0] * (b @ a)
    return merged


def reference_logits(weights: dict[str, np.ndarray], tokens: list[int], shape: Shape = Shape(),
                     layer_offsets: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Logits of every position, computed in float64 numpy the way llama.cpp's llama graph does.
    ``layer_offsets`` adds a vector to the output of a layer (a control vector)."""
    head_dim = shape.n_embd // shape.n_head
    group = shape.n_head // shape.n_head_kv
    n = len(tokens)

    def rms_norm(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + shape.rms_eps) * gain

    def rope(x: np.ndarray) -> np.ndarray:  # x: (n, heads, head_dim); llama.cpp "normal" mode rotates adjacent pairs
        inv_freq = shape.rope_base ** (-np.arange(0, head_dim, 2) / head_dim)
        angles = np.arange(n)[:, None] * inv_freq[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = w["token_embd.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(shape.n_layer):
        h = rms_norm(x, w[f"blk.{i}.attn_norm.weight"])
        q = rope((h @ w[f"blk.{i}.attn_q.weight"].T).reshape(n, shape.n_head, head_dim))
        k = rope((h @ w[f"blk.{i}.attn_k.weight"].T).reshape(n, shape.n_head_kv, head_dim))
        v = (h @ w[f"blk.{i}.attn_v.weight"].T).reshape(n, shape.n_head_kv, head_dim)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, -1)
        x = x + attn @ w[f"blk.{i}.attn_output.weight"].T
        h = rms_norm(x, w[f"blk.{i}.ffn_norm.weight"])
        gate = h @ w[f"blk.{i}.ffn_gate.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w[f"blk.{i}.ffn_up.weight"].T)) @ w[f"blk.{i}.ffn_down.weight"].T
        if layer_offsets and i in layer_offsets:
            x = x + layer_offsets[i]
    return rms_norm(x, w["output_norm.weight"]) @ w["output.weight"].T


BERT_WORDS = ["the", "is", "cat", "dog", "sat", "on", "mat", "hello", "world", "search", "query",
              "document", "about", "llamas", "and", "cats", "##ing", "##ed"]


def wordpiece_vocab() -> Vocabulary:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = specials + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + BERT_WORDS
    types = [int(gguf.TokenType.CONTROL)] * len(specials) + [int(gguf.TokenType.NORMAL)] * (len(tokens) - len(specials))
    types[1] = int(gguf.TokenType.UNKNOWN)
    # as llama.cpp's converter writes WordPiece: word starts get "▁", continuations lose "##"
    tokens = [t if t in specials else t[2:] if t.startswith("##") else "▁" + t for t in tokens]
    return Vocabulary("bert", tokens, types, bos=2, eos=3, add_bos=True, unk=1)


def write_bert(path: Path, shape: Shape = Shape(n_head_kv=4, n_layer=2), seed: int = 0, reranker: bool = False,
               rerank_template: str | None = None) -> dict[str, np.ndarray]:
    """A tiny BERT embedding model (mean pooling, WordPiece vocab), F32.

    ``reranker=True``: a cross-encoder instead, with the classification head llama.cpp applies
    under RANK pooling (``cls``: dense + tanh on the [CLS] row, ``cls.output``: one logit) and,
    like converted bge/jina rerankers, no pooling type of its own. ``rerank_template`` is stored
    as ``tokenizer.chat_template.rerank``."""
    vocab = wordpiece_vocab()
    rng = np.random.default_rng(seed)
    d, ff = shape.n_embd, shape.n_ff

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vector(n: int, scale: float = 0.1, offset: float = 0.0) -> np.ndarray:
        return (offset + scale * rng.standard_normal(n)).astype(np.float32)

    weights = {
        "token_embd.weight": matrix(len(vocab.tokens), d) * 4,
        "token_types.weight": matrix(2, d),
        "position_embd.weight": matrix(shape.n_ctx_train, d),
        "token_embd_norm.weight": vector(d, offset=1.0), "token_embd_norm.bias": vector(d),
    }
    for i in range(shape.n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weights[f"blk.{i}.{part}.weight"] = matrix(d, d)
            weights[f"blk.{i}.{part}.bias"] = vector(d)
        weights |= {
            f"blk.{i}.attn_output_norm.weight": vector(d, offset=1.0), f"blk.{i}.attn_output_norm.bias": vector(d),
            f"blk.{i}.ffn_up.weight": matrix(ff, d), f"blk.{i}.ffn_up.bias": vector(ff),
            f"blk.{i}.ffn_down.weight": matrix(d, ff), f"blk.{i}.ffn_down.bias": vector(d),
            f"blk.{i}.layer_output_norm.weight": vector(d, offset=1.0), f"blk.{i}.layer_output_norm.bias": vector(d),
        }
    if reranker:
        weights |= {"cls.weight": matrix(d, d), "cls.bias": vector(d),
                    "cls.output.weight": matrix(1, d) * 4, "cls.output.bias": vector(1)}
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("tiny-bert-reranker" if reranker else "tiny-bert")
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(d)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(shape.n_head)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    if not reranker:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    if rerank_template is not None:
        writer.add_chat_template([{"name": "rerank", "template": rerank_template}])
    writer.add_token_type_count(2)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    write_vocab(writer, vocab)
    writer.add_sep_token_id(3)
    writer.add_add_eos_token(True)
    for name, array in weights.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def reference_bert_embedding(weights: dict[str, np.ndarray], tokens: list[int], shape: Shape = Shape(n_head_kv=4)) -> np.ndarray:
    """Mean-pooled output of the tiny BERT for one sequence, in float64 numpy."""
    return reference_bert_hidden(weights, tokens, shape).mean(0)


def reference_rerank_score(weights: dict[str, np.ndarray], tokens: list[int], shape: Shape = Shape(n_head_kv=4)) -> float:
    """The tiny reranker's relevance logit for one (query, document) token sequence: the first
    ([CLS]) row, dense + tanh, then the one-logit output layer."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    pooled = np.tanh(w["cls.weight"] @ reference_bert_hidden(weights, tokens, shape)[0] + w["cls.bias"])
    return float((w["cls.output.weight"] @ pooled + w["cls.output.bias"])[0])


def reference_bert_hidden(weights: dict[str, np.ndarray], tokens: list[int], shape: Shape = Shape(n_head_kv=4)) -> np.ndarray:
    """The tiny BERT's last hidden states for one sequence (one row per token), in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n, d, heads = len(tokens), shape.n_embd, shape.n_head

    def layer_norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    x = w["token_embd.weight"][tokens] + w["position_embd.weight"][:n] + w["token_types.weight"][0]
    x = layer_norm(x, "token_embd_norm")
    for i in range(shape.n_layer):
        q, k, v = (linear(x, f"blk.{i}.attn_{p}").reshape(n, heads, -1) for p in "qkv")
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d // heads)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, d)
        x = layer_norm(x + linear(attn, f"blk.{i}.attn_output"), f"blk.{i}.attn_output_norm")
        h = linear(x, f"blk.{i}.ffn_up")
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
        x = layer_norm(x + linear(h, f"blk.{i}.ffn_down"), f"blk.{i}.layer_output_norm")
    return x
