"""Images and audio through llama.cpp's libmtmd: a tiny random Gemma 3 vision model and a Qwen2-Audio
projector (tests/media_models.py), media from files, bytes and arrays, prompts that evaluate into a
context, chat messages with image and audio parts, prefix reuse that knows where an image is, and
bad input."""

from __future__ import annotations

import base64
import gc

import numpy as np
import pytest

from pyllama import ClosedError, Context, Llama, Model, ModelLoadError
from pyllama.errors import MediaError, MediaTooLargeError
from pyllama.multimodal import Media, MediaPrompt, Projector, default_marker
from media_models import AUDIO_RATE, IMAGE_TOKENS, png, square, tone, wav

RED, BLUE = square((255, 0, 0)), square((0, 0, 255))
ASK = "What colour is the square?"


@pytest.fixture(scope="module")
def model(tiny_vision):
    with Model(tiny_vision[0]) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def projector(model, tiny_vision):
    with Projector(model, tiny_vision[1], use_gpu=False) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def llm(tiny_vision):
    with Llama(tiny_vision[0], mmproj=tiny_vision[1], n_ctx=256, seed=1) as loaded:
        yield loaded


def data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(pixels)).decode()


def user(image: str, text: str = ASK) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": text}]}]


def last_logits(model: Model, prompt: MediaPrompt, n_ctx: int = 128) -> np.ndarray:
    with Context(model, n_ctx=n_ctx) as context:
        prompt.evaluate(context)
        return np.array(context.logits())


def test_the_projector_says_what_it_takes(projector):
    assert projector.supports_vision and not projector.supports_audio
    assert projector.audio_sample_rate is None and not projector.uses_mrope
    assert default_marker() == "<__media__>"
    assert "vision" in repr(projector)


def test_image_tokens_sit_between_the_image_markers_and_change_the_output(model, projector):
    red = projector.tokenize(["<start_of_turn>user\n", projector.image(RED), ASK])
    start, chunk = next(iter(red.media.items()))
    assert (chunk.kind, chunk.n_tokens, chunk.n_pos) == ("image", IMAGE_TOKENS, IMAGE_TOKENS)
    vocab = model.vocab
    assert red.tokens[start - 1] == vocab.tokenize("<start_of_image>", False, True)[0]
    assert red.tokens[start + IMAGE_TOKENS] == vocab.tokenize("<end_of_image>", False, True)[0]
    assert all(t < 0 for t in red.tokens[start:start + IMAGE_TOKENS])  # placeholders, never token ids
    blue = projector.tokenize(["<start_of_turn>user\n", projector.image(BLUE), ASK])
    assert blue.tokens[:start] == red.tokens[:start] and blue.tokens[start:start + 4] != red.tokens[start:start + 4]
    red_logits, blue_logits = last_logits(model, red), last_logits(model, blue)
    assert np.abs(red_logits - blue_logits).max() > 1e-3  # the pixels reached the model
    np.testing.assert_allclose(last_logits(model, red), red_logits, rtol=1e-5, atol=1e-5)


def test_a_png_and_the_same_pixels_as_an_array_are_one_image(model, projector, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png(RED))
    from_file, from_bytes, from_array = projector.load(path), projector.load(png(RED)), projector.image(RED)
    assert (from_file.width, from_file.height, from_file.is_audio) == (32, 32, False)
    assert from_file.id == from_bytes.id  # the sha256 of the file
    logits = [last_logits(model, projector.tokenize(["<start_of_turn>user\n", media, ASK]))
              for media in (from_file, from_array)]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    gray, rgba = projector.image(RED[:, :, 0]), projector.image(np.dstack([RED, np.full((32, 32), 255, np.uint8)]))
    assert (gray.width, gray.height) == (32, 32) and rgba.id == from_array.id  # alpha dropped


@pytest.mark.parametrize("data, message", [
    (b"", r"empty \(0 bytes\)"),
    (png(RED)[:60], "could not be read"),  # truncated: the header is there, the pixels are not
    (b"this is not an image, just some text", "could not be read"),
    (b"\xff\xfb\x90\x00" + bytes(200), "could not be read"),  # looks like MP3: this projector takes no audio
])
def test_bad_image_bytes_raise_media_error(projector, data, message):
    with pytest.raises(MediaError, match=message):
        projector.load(data)


def test_an_image_that_claims_to_be_huge_is_refused_before_it_is_decoded(projector):
    def claiming(side: int) -> bytes:
        header = bytearray(png(RED))
        header[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height
        return bytes(header)

    with pytest.raises(MediaTooLargeError, match="10000x10000 = 100000000 pixels, .* limit of 67108864 pixels"):
        projector.load(claiming(10_000))  # 300 MB of pixels in ~100 bytes
    with pytest.raises(MediaTooLargeError, match="too large to decode"):
        projector.load(claiming(100_000))  # 30 GB
    with pytest.raises(MediaTooLargeError, match="max_image_pixels"):
        Media.from_array(np.zeros((20, 20, 3), np.uint8), max_pixels=100)


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
])
def test_bad_arrays_raise_media_error(projector, pixels, message):
    with pytest.raises(MediaError, match=message):
        projector.image(pixels)


def test_audio_on_a_vision_projector_is_refused(projector):
    with pytest.raises(MediaError, match="no audio"):
        projector.audio(np.zeros(1600, np.float32))
    clip = Media.from_audio(np.zeros(1600, np.float32))
    with pytest.raises(MediaError, match="takes no audio"):
        projector.tokenize(["listen: ", clip, "."])
    with pytest.raises(MediaError, match="finite"):
        Media.from_audio(np.array([0.0, np.nan], np.float32))


def test_bad_projector_files(model, tiny_vision, tmp_path):
    with pytest.raises(FileNotFoundError):
        Projector(model, tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError):
        Projector(model, tmp_path / "junk.gguf")
    with pytest.raises(ModelLoadError, match="could not load the projector"):
        Projector(model, tiny_vision[0])  # a text model is not a projector


def test_closing_keeps_the_native_parents_alive_and_closed_objects_raise(tiny_vision):
    model = Model(tiny_vision[0])
    projector = Projector(model, tiny_vision[1], use_gpu=False)
    prompt = projector.tokenize(["<start_of_turn>user\n", projector.image(RED), ASK])
    context = Context(model, n_ctx=128)
    model.close()  # the projector and the context still hold its memory
    prompt.evaluate(context)
    assert np.isfinite(np.array(context.logits())).all()
    image = projector.image(BLUE)
    image.close()
    with pytest.raises(ClosedError):
        projector.tokenize([image])
    projector.close()
    with pytest.raises(ClosedError):
        projector.load(png(RED))
    with pytest.raises(ClosedError):  # a chunk evaluates through its projector
        next(iter(prompt.media.values())).evaluate(context, 0)
    del projector, prompt
    gc.collect()
    context.close()


def test_text_that_looks_like_a_media_marker_stays_text(projector):
    prompt = projector.tokenize([f"write {default_marker()} here: ", projector.image(RED), ASK])
    assert len(prompt.media) == 1


def test_chat_with_an_image_is_reused_whole_or_from_its_start(llm, tiny_vision):
    red = llm.create_chat_completion(user(data_url(RED)), max_tokens=8, temperature=0)
    prompt_tokens = red["usage"]["prompt_tokens"]
    assert llm.last_prompt_evaluated == prompt_tokens
    again = llm.create_chat_completion(user(data_url(RED)), max_tokens=8, temperature=0)
    assert again["choices"][0]["message"] == red["choices"][0]["message"] and llm.last_prompt_evaluated == 1
    blue = llm.create_chat_completion(user(data_url(BLUE)), max_tokens=8, temperature=0)
    image_start = prompt_tokens - llm.last_prompt_evaluated
    assert 0 < image_start < prompt_tokens - IMAGE_TOKENS  # the shared text before the image was kept
    with Llama(tiny_vision[0], mmproj=tiny_vision[1], n_ctx=256, seed=1) as fresh:  # nothing stale in the KV
        assert fresh.create_chat_completion(user(data_url(BLUE)), max_tokens=8, temperature=0)["choices"] == \
            blue["choices"]
    text_only = llm.create_chat_completion([{"role": "user", "content": ASK}], max_tokens=8, temperature=0)
    assert text_only["usage"]["prompt_tokens"] < prompt_tokens - IMAGE_TOKENS


def test_chat_takes_local_paths_in_the_python_api(llm, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png(RED))
    by_url = llm.create_chat_completion(user(data_url(RED)), max_tokens=6, temperature=0)["choices"]
    for image in (str(path), path.as_uri()):
        assert llm.create_chat_completion(user(image), max_tokens=6, temperature=0)["choices"] == by_url
    stream = llm.create_chat_completion(user(str(path)), max_tokens=6, temperature=0, stream=True)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in stream) == by_url[0]["message"]["content"]


@pytest.mark.parametrize("url, message", [
    ("https://example.org/cat.png", "remote image URLs are turned off"),
    ("data:image/png;base64,%%%not-base64", "not valid base64"),
    ("data:image/png;base64,", "empty"),
    ("/nowhere/cat.png", "image file not found"),
    ("data:image/png;base64," + base64.b64encode(png(RED)[:60]).decode(), "could not be read"),
])
def test_chat_with_a_bad_image_raises_value_error(llm, url, message):
    with pytest.raises(ValueError, match=message):
        llm.create_chat_completion(user(url), max_tokens=4)


def test_images_need_a_projector_and_media_prompts_need_text_after_them(tiny_vision, projector):
    with Llama(tiny_vision[0], n_ctx=128) as plain:
        with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\]: image_url parts need .* \(mmproj\)"):
            plain.create_chat_completion(user(data_url(RED)), max_tokens=4)
    prompt = projector.tokenize(["look: ", projector.image(RED), "."])
    (start, chunk), = prompt.media.items()
    ends_with_image = MediaPrompt(prompt.tokens[:start + chunk.n_pos], prompt.media)  # no logits would come out
    with pytest.raises(MediaError, match="put text after it"), Context(projector.model, n_ctx=128) as context:
        ends_with_image.evaluate(context)


def test_a_media_prompt_completes_and_refuses_echo(llm):
    prompt = llm.projector.tokenize(["<start_of_turn>user\n", llm.projector.image(RED), ASK])
    out = llm.create_completion(prompt, max_tokens=4, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(prompt)
    with pytest.raises(ValueError, match="echo"):
        llm.create_completion(prompt, max_tokens=4, echo=True)


@pytest.fixture(scope="module")
def listener(model, tiny_multimodal):
    with Projector(model, tiny_multimodal[2], use_gpu=False) as loaded:
        yield loaded


def audio_part(samples: np.ndarray, format: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(samples)).decode(), "format": format}}


def test_audio_from_samples_and_from_a_wav_file_is_heard(model, listener, tmp_path):
    assert listener.supports_audio and not listener.supports_vision and listener.audio_sample_rate == AUDIO_RATE
    low, high = (listener.tokenize(["listen: ", listener.audio(tone(hertz)), " what is it?"]) for hertz in (440, 880))
    (start, chunk), = low.media.items()
    assert chunk.kind == "audio" and chunk.n_tokens == chunk.n_pos > 100
    heard = [last_logits(model, prompt, n_ctx=1024) for prompt in (low, high)]
    assert np.abs(heard[0] - heard[1]).max() > 1e-3
    path = tmp_path / "low.wav"
    path.write_bytes(wav(tone(440)))
    from_file = listener.load(path)
    assert from_file.is_audio and from_file.width == AUDIO_RATE  # samples
    from_wav = last_logits(model, listener.tokenize(["listen: ", from_file, " what is it?"]), n_ctx=1024)
    np.testing.assert_allclose(from_wav, heard[0], atol=1e-2)  # the same tone, but 16-bit in the file
    with pytest.raises(MediaError, match="takes no images"):
        listener.tokenize(["look: ", Media.from_array(RED), "."])


def test_chat_with_input_audio(tiny_multimodal):
    with Llama(tiny_multimodal[0], mmproj=tiny_multimodal[2], n_ctx=1024, seed=1) as llm:
        def ask(*parts: dict) -> dict:
            content = [*parts, {"type": "text", "text": "what is it?"}]
            return llm.create_chat_completion([{"role": "user", "content": content}], max_tokens=6, temperature=0)

        low = ask(audio_part(tone(440)))
        assert low["usage"]["prompt_tokens"] > 100 and llm.last_prompt_evaluated == low["usage"]["prompt_tokens"]
        assert ask(audio_part(tone(440)))["choices"] == low["choices"] and llm.last_prompt_evaluated == 1
        high = ask(audio_part(tone(880)))  # evaluated again from where the audio starts
        assert 100 < llm.last_prompt_evaluated < low["usage"]["prompt_tokens"]
        with pytest.raises(ValueError, match="format must be one of wav, mp3, flac"):
            ask(audio_part(tone(440), "ogg"))
        with pytest.raises(ValueError, match="takes no images"):
            ask({"type": "image_url", "image_url": {"url": data_url(RED)}})
        assert high["usage"] == low["usage"]
