"""Model: loading, metadata, vocabulary, and bad files that must not crash the process."""

from __future__ import annotations

import pytest

import pyllama
from pyllama import ClosedError, Model, ModelLoadError
from pyllama.enums import VocabType


def test_reads_what_the_model_is(model, tiny_spm):
    weights = tiny_spm[1]
    assert model.architecture == "llama"
    assert model.n_params == sum(w.size for w in weights.values())
    assert model.n_embd == 64 and model.n_layer == 2 and model.n_head == 4 and model.n_head_kv == 2
    assert model.n_ctx_train == 512
    assert model.size == 4 * model.n_params
    assert model.metadata["general.name"] == "tiny-llama"
    assert model.metadata["llama.block_count"] == "2"
    assert "llama" in model.description
    assert model.has_decoder and not model.has_encoder
    assert model.chat_template() is None


def test_vocab(model):
    vocab = model.vocab
    assert vocab.type == VocabType.SPM
    assert vocab.bos == 1 and vocab.eos == 2
    assert vocab.is_eog(vocab.eos) and not vocab.is_eog(vocab.bos + 300)
    assert vocab.text(vocab.bos) == "<s>"
    assert vocab.add_bos


@pytest.mark.parametrize("text", ["hello world", "the planets of the solar system", "你好世界",
                                  "emoji 👩‍👩‍👧 and tabs\t\tend", "  two  spaces\n\nnewlines", "x = f(a, b) - 1;"])
def test_tokenize_round_trip(model, text):
    tokens = model.tokenize(text)
    assert tokens[0] == model.vocab.bos
    # sentencepiece prefixes one space (add_space_prefix)
    assert model.detokenize(tokens, remove_special=True) == " " + text
    pieces = b"".join(model.token_to_piece(t) for t in tokens[1:])
    assert pieces.decode("utf-8") == " " + text


def test_tokenize_options(model):
    assert model.tokenize("hello", add_special=False)[0] != model.vocab.bos
    assert model.tokenize("<s>hello", add_special=False, parse_special=True)[0] == model.vocab.bos
    assert model.vocab.bos not in model.tokenize("<s>hello", add_special=False, parse_special=False)
    long = "the planets " * 2000
    assert len(model.tokenize(long)) > 4000


def test_byte_level_bpe_vocab(tiny_bpe):
    with Model(tiny_bpe[0]) as bpe:
        assert bpe.vocab.type == VocabType.BPE
        for text in ["hello world", "你好 世界", "👩‍👩‍👧 emoji", "tabs\tand\nnewlines"]:
            tokens = bpe.tokenize(text, add_special=False)
            assert bpe.detokenize(tokens) == text
        assert len(bpe.tokenize(" hello", add_special=False)) == 1  # merged by the BPE merges


def test_bad_token_ids_raise(model):
    with pytest.raises(IndexError):
        model.token_to_piece(10**6)
    with pytest.raises(IndexError):
        model.detokenize([1, -5])
    with pytest.raises(IndexError):
        model.vocab.text(model.vocab.n_tokens)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        Model(tmp_path / "missing.gguf")


def test_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, long enough to have a header" * 3)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Model(path)


def test_unsupported_architecture_is_named(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "alienformer")
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(ModelLoadError, match="alienformer"):
        Model(path)


def test_progress_callback_and_cancel(tiny_spm):
    seen = []
    with Model(tiny_spm[0], progress=seen.append):
        pass
    assert seen and seen[-1] == pytest.approx(1.0)
    with pytest.raises(ModelLoadError, match="cancelled"):
        Model(tiny_spm[0], progress=lambda p: False)


def test_progress_callback_exception_is_reraised(tiny_spm):
    def explode(progress: float) -> None:
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        Model(tiny_spm[0], progress=explode)


def test_kv_overrides(tiny_spm):
    with Model(tiny_spm[0], kv_overrides={"llama.context_length": 128, "general.name": "renamed"}) as m:
        assert m.n_ctx_train == 128
    with pytest.raises(TypeError):
        Model(tiny_spm[0], kv_overrides={"llama.context_length": [1]})


def test_vocab_only(tiny_spm):
    with Model(tiny_spm[0], vocab_only=True) as m:
        assert m.tokenize("hello") == Model(tiny_spm[0]).tokenize("hello")


def test_closed_model_raises_instead_of_crashing(tiny_spm):
    m = Model(tiny_spm[0])
    vocab = m.vocab
    m.close()
    m.close()  # idempotent
    assert m.closed
    with pytest.raises(ClosedError):
        m.tokenize("hello")
    with pytest.raises(ClosedError):
        _ = m.n_params
    with pytest.raises(ClosedError):
        vocab.tokenize("hello")
    with pytest.raises(ClosedError):
        pyllama.Context(m)


def test_verbose_load_on_a_terminal_draws_a_progress_bar(tiny_spm):
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    code = f"import pyllama; pyllama.Model({str(tiny_spm[0])!r}, verbose=True); pyllama.Model({str(tiny_spm[0])!r})"
    process = subprocess.run([sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower, timeout=60)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.returncode == 0
    text = output.decode()
    assert "loading tiny-spm.gguf [" in text and "100%" in text
    assert text.count("100%") == 1  # the second, non-verbose load stays quiet
