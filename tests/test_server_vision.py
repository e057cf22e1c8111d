"""The server with a projector (--mmproj): images as data URLs in /v1/chat/completions, evaluated by
the continuous-batching engine for each slot's sequence; remote URLs only when turned on; limits
and bad images answered with a 4xx; /props says whether vision is on."""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import json
import threading
import urllib.request

import pytest

from server_process import running_server
from test_server import post
from media_models import png, square, tone, wav

RED, BLUE, GREEN = (png(square(colour)) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
LIMIT = 50_000


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def chat(url: str, text: str = "What colour is the square?", **extra) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": text}]}],
            "max_tokens": 8, "temperature": 0, **extra}


@pytest.fixture(scope="module")
def server(tiny_vision):
    with running_server(tiny_vision[0], "--mmproj", str(tiny_vision[1]), "--n_ctx", "1024", "--n_parallel", "3",
                        "--media_max_bytes", str(LIMIT)) as base:
        yield base


@pytest.fixture(scope="module")
def image_host():
    """A loopback web server that serves RED at /red.png."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = RED if self.path == "/red.png" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{host.server_address[1]}"
    host.shutdown()


def answer(body: dict) -> str:
    return body["choices"][0]["message"]["content"]


def test_props_say_vision_is_on(server, tiny_vision):
    props = json.loads(urllib.request.urlopen(f"{server}/props").read())
    assert props["modalities"] == {"vision": True, "audio": False}
    with running_server(tiny_vision[0], "--n_ctx", "256", "--n_parallel", "1") as plain:
        assert json.loads(urllib.request.urlopen(f"{plain}/props").read())["modalities"] == \
            {"vision": False, "audio": False}
        status, body, _ = post(f"{plain}/v1/chat/completions", chat(data_url(RED)))
        assert status == 400 and "mmproj" in body["error"]["message"]


def test_an_image_changes_the_reply_and_is_reused_from_the_slot(server):
    status, red, _ = post(f"{server}/v1/chat/completions", chat(data_url(RED)))
    assert status == 200, red
    assert red["timings"]["cache_n"] == 0 or red["timings"]["prompt_n"] == red["usage"]["prompt_tokens"]
    status, again, _ = post(f"{server}/v1/chat/completions", chat(data_url(RED)))
    assert answer(again) == answer(red) and again["timings"]["prompt_n"] == 1  # the image stayed in the slot
    replies = {answer(post(f"{server}/v1/chat/completions", chat(data_url(image)))[1]) for image in (BLUE, GREEN)}
    assert len(replies | {answer(red)}) > 1  # the pixels reach the model


def test_parallel_requests_with_different_images_match_their_replies_alone(server):
    """Slots decode in one batch; each image goes into its own sequence at its own positions."""
    alone = {image: answer(post(f"{server}/v1/chat/completions", chat(data_url(image), text=text))[1])
             for image, text in ((RED, "one"), (BLUE, "two words"), (GREEN, "three words here"))}
    requests = [(image, text) for image, text in ((RED, "one"), (BLUE, "two words"), (GREEN, "three words here"))] * 2
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(lambda item: post(f"{server}/v1/chat/completions",
                                                  chat(data_url(item[0]), text=item[1]))[1], requests))
    assert [answer(reply) for reply in replies] == [alone[image] for image, _ in requests]
    status, two, _ = post(f"{server}/v1/chat/completions", chat(data_url(BLUE), text="two words", n=2))
    assert status == 200 and [c["message"]["content"] for c in two["choices"]] == [alone[BLUE]] * 2


def test_streaming_with_an_image(server):
    request = urllib.request.Request(f"{server}/v1/chat/completions", data=json.dumps(chat(data_url(RED), stream=True))
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.read().decode().splitlines()
                  if line.startswith("data: {")]
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert streamed == answer(post(f"{server}/v1/chat/completions", chat(data_url(RED)))[1])


@pytest.mark.parametrize("url, status, message", [
    (data_url(RED[:60]), 400, "could not be read"),
    ("data:image/png;base64,", 400, "empty"),
    ("data:image/png;base64,!!!", 400, "not valid base64"),
    (data_url(b"just some text, not an image at all"), 400, "could not be read"),
    (data_url(bytes(LIMIT + 1)), 413, f"more than the limit of {LIMIT} bytes"),
    ("/etc/passwd", 400, "must be a data URL"),
    ("file:///etc/passwd", 400, "not allowed unless the server is started with --media-path"),
])
def test_bad_images_are_a_4xx_naming_what_is_wrong(server, url, status, message):
    code, body, _ = post(f"{server}/v1/chat/completions", chat(url))
    assert code == status and message in body["error"]["message"], body
    assert post(f"{server}/v1/chat/completions", chat(data_url(RED)))[0] == 200  # the server goes on


def test_an_image_claiming_huge_dimensions_is_refused_before_decoding(server):
    header = bytearray(RED)
    header[16:24] = (10_000).to_bytes(4, "big") * 2
    code, body, _ = post(f"{server}/v1/chat/completions", chat(data_url(bytes(header))))
    assert code == 413 and "limit of 67108864 pixels" in body["error"]["message"]


def test_remote_images_only_when_the_operator_turns_them_on(server, tiny_vision, image_host):
    code, body, _ = post(f"{server}/v1/chat/completions", chat(f"{image_host}/red.png"))
    assert code == 400 and "remote image URLs are turned off" in body["error"]["message"]
    expected = answer(post(f"{server}/v1/chat/completions", chat(data_url(RED)))[1])
    with running_server(tiny_vision[0], "--mmproj", str(tiny_vision[1]), "--n_ctx", "512", "--n_parallel", "1",
                        "--allow_remote_media") as remote:
        code, body, _ = post(f"{remote}/v1/chat/completions", chat(f"{image_host}/red.png"))
        assert code == 200 and answer(body) == expected
        code, body, _ = post(f"{remote}/v1/chat/completions", chat(f"{image_host}/missing.png"))
        assert code == 400 and "could not download" in body["error"]["message"]


def test_local_images_only_from_inside_the_media_path(server, tiny_vision, tmp_path):
    """llama-server's --media-path: file://NAME is NAME inside that folder, never outside it."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "red.png").write_bytes(RED)
    (tmp_path / "secret.png").write_bytes(RED)
    expected = answer(post(f"{server}/v1/chat/completions", chat(data_url(RED)))[1])
    with running_server(tiny_vision[0], "--mmproj", str(tiny_vision[1]), "--n_ctx", "512", "--n_parallel", "1",
                        "--media-path", str(pictures)) as local:
        for url in ("file://red.png", "file:////red.png"):  # a leading / is still inside the folder
            code, body, _ = post(f"{local}/v1/chat/completions", chat(url))
            assert code == 200 and answer(body) == expected, body
        for url, message in (("file://missing.png", "does not exist"), ("file://../secret.png", "not allowed"),
                             (f"file://{tmp_path}/secret.png", "does not exist")):
            code, body, _ = post(f"{local}/v1/chat/completions", chat(url))
            assert code == 400 and message in body["error"]["message"], body


def test_audio_parts_with_an_audio_projector(tiny_multimodal):
    with running_server(tiny_multimodal[0], "--mmproj", str(tiny_multimodal[2]), "--n_ctx", "1024",
                        "--n_parallel", "1") as base:
        assert json.loads(urllib.request.urlopen(f"{base}/props").read())["modalities"] == \
            {"vision": False, "audio": True}
        audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(tone(440))).decode(),
                                                        "format": "wav"}}
        body = {"messages": [{"role": "user", "content": [audio, {"type": "text", "text": "what is it?"}]}],
                "max_tokens": 4, "temperature": 0}
        code, reply, _ = post(f"{base}/v1/chat/completions", body)
        assert code == 200 and reply["usage"]["prompt_tokens"] > 100
        code, reply, _ = post(f"{base}/v1/chat/completions", chat(data_url(RED)))
        assert code == 400 and "takes no images" in reply["error"]["message"]
