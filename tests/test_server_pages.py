"""What a browser opens besides the chat page: /docs with Swagger UI served by the server itself
(no CDN: a machine without internet gets a working page), the icon, and GET /v1."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from server_process import running_server


@pytest.fixture(scope="module")
def server(tiny_spm):
    with running_server(tiny_spm[0], "--n_ctx", "256", "--embedding", "--api-key", "k1") as base:
        yield base


def get(url: str, key: str | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def test_docs_load_swagger_ui_from_the_server_itself_without_a_key(server):
    status, page, _ = get(server + "/docs")
    assert status == 200
    html = page.decode()
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    assert "/docs/swagger-ui-bundle.js" in assets and "/docs/swagger-ui.css" in assets
    assert not [a for a in assets if "//" in a], assets  # nothing from another host
    for asset, kind in (("/docs/swagger-ui-bundle.js", "javascript"), ("/docs/swagger-ui.css", "text/css")):
        status, body, content_type = get(server + asset)
        assert status == 200 and kind in content_type and len(body) > 10_000
    assert get(server + "/v1/models")[0] == 401  # the key is still needed where it was


def test_icon_and_api_index(server):
    status, icon, content_type = get(server + "/favicon.ico")
    assert status == 200 and content_type.startswith("image/svg+xml") and icon.startswith(b"<svg")
    status, body, _ = get(server + "/v1", key="k1")
    index = json.loads(body)
    assert status == 200 and index["docs"] == "/docs"
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(index["routes"])


def test_embeddings_of_a_generative_model_say_its_default_pooling_and_how_to_choose(server):
    request = urllib.request.Request(server + "/v1/embeddings", data=json.dumps({"input": "hello"}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer k1"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    message = json.loads(error.value.read())["error"]["message"]
    assert error.value.code == 400 and "this model's default pooling is none" in message
    assert "--pooling mean" in message and "this server has --pooling" not in message
