"""Context and Batch: logits against a numpy reference, errors, KV memory, state, lifetimes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models import reference_logits
from pyllama import (Batch, ClosedError, Context, DecodeAbortedError, DecodeError, KVCacheFullError, Model,
                     StaleViewError)
from pyllama.enums import GGMLType

PROMPT = "hello world, the planets of the solar system"


def f32_context(model: Model, **kwargs) -> Context:
    kwargs.setdefault("n_ctx", 256)
    return Context(model, type_k=GGMLType.F32, type_v=GGMLType.F32, n_threads=2, **kwargs)


def test_logits_agree_with_numpy_reference(model, tiny_spm):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens, output=True))
        ours = np.stack([np.array(ctx.logits(i)) for i in range(len(tokens))])
    expected = reference_logits(tiny_spm[1], tokens)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=2e-2, rtol=1e-2)
    assert (ours.argmax(1) == expected.argmax(1)).mean() > 0.9


def test_incremental_decode_matches_one_batch(model):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens))
        whole = np.array(ctx.logits())
        ctx.kv_clear()
        ctx.decode(Batch.of(tokens[:-3]))
        for offset, token in enumerate(tokens[-3:]):
            ctx.decode(Batch.of([token], start_pos=len(tokens) - 3 + offset))
        np.testing.assert_allclose(ctx.logits(), whole, atol=1e-3)


def test_logits_view_is_read_only_and_shares_memory(model):
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(model.tokenize("hello")))
        view = ctx.logits()
        assert view.dtype == np.float32 and view.shape == (model.vocab.n_tokens,)
        assert not view.flags.writeable
        assert np.shares_memory(view, ctx.logits(-1))
        with pytest.raises(IndexError):
            ctx.logits(5)


def test_views_keep_memory_alive_after_close(model):
    ctx = f32_context(model)
    ctx.decode(Batch.of(model.tokenize("hello")))
    view = ctx.logits()
    expected = view.copy()
    ctx.close()
    with pytest.raises(ClosedError):
        ctx.logits()
    np.testing.assert_array_equal(view, expected)  # still readable: not freed under it


def test_decode_that_would_move_a_referenced_view_refuses(model):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens[:4]))
        view = ctx.logits()
        with pytest.raises(StaleViewError, match="np.array"):
            ctx.decode(Batch.of(tokens[4:], start_pos=4, output=True))
        del view
        ctx.decode(Batch.of(tokens[4:], start_pos=4, output=True))  # fine once no view is referenced


def test_kv_full_is_its_own_exception(model):
    with f32_context(model, n_ctx=256, n_batch=256) as ctx:
        n_ctx = ctx.n_ctx
        ctx.decode(Batch.of([5 + i % 300 for i in range(n_ctx)]))
        with pytest.raises(KVCacheFullError) as info:
            ctx.decode(Batch.of([5], start_pos=n_ctx))
        assert info.value.code == 1
        ctx.kv_remove(0, n_ctx - 1, -1)
        ctx.decode(Batch.of([5], start_pos=n_ctx - 1))  # usable again once a slot is free


def test_batch_larger_than_n_batch_and_bad_tokens_raise(model):
    with f32_context(model, n_batch=8) as ctx:
        with pytest.raises(ValueError, match="n_batch is 8"):
            ctx.decode(Batch.of(list(range(3, 20))))
        with pytest.raises(DecodeError, match="invalid token"):
            ctx.decode(Batch.of([1, 10**6]))
        with pytest.raises(ValueError, match="empty"):
            ctx.decode(Batch(4))
        ctx.decode(Batch.of([1, 5, 6]))  # still usable


def test_abort_callback(model):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.set_abort(lambda: True)
        with pytest.raises(DecodeAbortedError):
            ctx.decode(Batch.of(tokens))

        def broken() -> bool:
            raise RuntimeError("abort check failed")

        ctx.set_abort(broken)
        with pytest.raises(RuntimeError, match="abort check failed"):
            ctx.decode(Batch.of(tokens))
        ctx.set_abort(None)
        ctx.kv_clear()
        ctx.decode(Batch.of(tokens))


def test_batch_capacity_is_enforced():
    batch = Batch(2, n_seq_max=2)
    batch.add(5, 0, (0, 1), output=True)
    batch.add(6, 1)
    with pytest.raises(IndexError, match="full"):
        batch.add(7, 2)
    with pytest.raises(IndexError):
        Batch(3).add_sequence([1, 2, 3, 4])
    with pytest.raises(ValueError):
        Batch(3, n_seq_max=1).add(1, 0, (0, 1))
    assert batch.n_outputs == 1 and list(batch.seq_ids[0]) == [0, 1]


def test_kv_remove_and_reuse_prefix(model):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens))
        full = np.array(ctx.logits())
        assert ctx.kv_pos_max(0) == len(tokens) - 1
        assert ctx.kv_remove(0, len(tokens) - 2, -1)
        assert ctx.kv_pos_max(0) == len(tokens) - 3
        ctx.decode(Batch.of(tokens[-2:], start_pos=len(tokens) - 2))
        np.testing.assert_allclose(ctx.logits(), full, atol=1e-3)


def test_sequences_share_a_context(model):
    a, b = model.tokenize("hello world"), model.tokenize("the solar system")
    with f32_context(model, n_seq_max=2) as ctx:
        batch = Batch(len(a) + len(b), n_seq_max=2)
        batch.add_sequence(a, seq_id=0)
        batch.add_sequence(b, seq_id=1)
        ctx.decode(batch)
        both = np.array(ctx.logits(len(a) - 1)), np.array(ctx.logits(len(a) + len(b) - 1))
        ctx.kv_remove(1)
        assert ctx.kv_pos_max(1) == -1 and ctx.kv_pos_max(0) == len(a) - 1
        ctx.kv_copy(0, 1)
        assert ctx.kv_pos_max(1) == len(a) - 1
    with f32_context(model) as alone:
        alone.decode(Batch.of(b))
        np.testing.assert_allclose(both[1], alone.logits(), atol=1e-3)


def test_state_round_trip_bytes_and_file(model, tmp_path):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens))
        saved = ctx.state_bytes()
        seq_saved = ctx.state_bytes(seq_id=0)
        ctx.save_state(tmp_path / "state.bin", tokens)
        ctx.decode(Batch.of([7], start_pos=len(tokens)))
        after = np.array(ctx.logits())
    with f32_context(model) as fresh:
        fresh.load_state_bytes(saved)
        fresh.decode(Batch.of([7], start_pos=len(tokens)))
        np.testing.assert_allclose(fresh.logits(), after, atol=1e-4)
    with f32_context(model) as fresh:
        assert fresh.load_state(tmp_path / "state.bin") == tokens
        fresh.decode(Batch.of([7], start_pos=len(tokens)))
        np.testing.assert_allclose(fresh.logits(), after, atol=1e-4)
    with f32_context(model) as fresh:
        fresh.load_state_bytes(seq_saved, seq_id=0)
        assert fresh.kv_pos_max(0) == len(tokens) - 1
        with pytest.raises(Exception, match="state"):
            fresh.load_state_bytes(b"garbage" * 10)
        with pytest.raises(FileNotFoundError):
            fresh.load_state(tmp_path / "nothing.bin")


def test_perf_counters(model):
    tokens = model.tokenize(PROMPT)
    with f32_context(model) as ctx:
        ctx.decode(Batch.of(tokens))
        for i in range(3):
            ctx.decode(Batch.of([5], start_pos=len(tokens) + i))
        perf = ctx.perf()
        assert perf.prompt_tokens == len(tokens) and perf.eval_tokens == 3
        assert perf.prompt_ms > 0 and "tokens per second" in str(perf)


def test_closing_the_model_while_a_context_lives_is_safe(tiny_spm):
    model = Model(tiny_spm[0])
    ctx = f32_context(model)
    tokens = model.tokenize("hello")
    model.close()
    ctx.decode(Batch.of(tokens))  # the native model stays until the context goes
    assert np.isfinite(ctx.logits()).all()
    ctx.close()
    with pytest.raises(ClosedError):
        ctx.decode(Batch.of(tokens))


def test_one_context_from_two_threads(model):
    tokens = model.tokenize(PROMPT)
    errors = []
    with f32_context(model, n_seq_max=2) as ctx:
        def work(seq_id: int) -> None:
            try:
                for _ in range(20):
                    ctx.kv_remove(seq_id)
                    ctx.decode(Batch.of(tokens, seq_id=seq_id))
                    assert np.isfinite(ctx.logits()).all()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_context_create_close_cycles_do_not_leak(model):
    tokens = model.tokenize("hello")
    for _ in range(50):  # warm up allocator pools
        with f32_context(model, n_ctx=64) as ctx:
            ctx.decode(Batch.of(tokens))
    before = rss_kib()
    for _ in range(1000):
        with f32_context(model, n_ctx=64) as ctx:
            ctx.decode(Batch.of(tokens))
    grown = rss_kib() - before
    assert grown < 20 * 1024, f"resident memory grew by {grown} KiB over 1000 contexts"


def test_encode_on_a_decoder_raises_instead_of_crashing(model):
    """llama_encode on a decoder-only model's KV memory ends the process; encode() refuses it."""
    with Context(model, n_ctx=64, embeddings=True) as ctx:
        with pytest.raises(ValueError, match="use decode"):
            ctx.encode(Batch.of(model.tokenize("hello"), output=True))


@pytest.mark.parametrize("option", [{"n_ctx": -5}, {"n_batch": 0}, {"n_ubatch": 2**31}, {"n_seq_max": 0},
                                    {"n_threads": -1}])
def test_out_of_range_sizes_are_value_errors(model, option):
    name, value = next(iter(option.items()))
    with pytest.raises(ValueError, match=f"{name} must be in"):
        Context(model, **option)
