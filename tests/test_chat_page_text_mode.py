"""The chat page for a model without a chat template (a base model, like the demo model): it says
so, starts in text mode (the model continues what you write), and chat is one click away; /docs
renders with no internet. In Debian's headless chromium against a real server."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from server_process import running_server
from test_chat_page import browser, fresh_page, replies_done, texts, type_and_send, wait  # noqa: F401 (fixture)

from pyllama import demo

TURN_MARKERS = ("<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "<start_of_turn", "<|im_")


@pytest.fixture(scope="module")
def base_model_server(tiny_spm):
    with running_server(tiny_spm[0], "--n_ctx", "1024") as base:  # no template: a base model's case
        yield base


def pressed(page) -> str:
    return page.find_element(By.CSS_SELECTOR, "#mode button[aria-pressed='true']").get_attribute("data-mode")


def short_replies(page, server: str, tokens: int = 24):
    page.execute_script(f"localStorage.setItem('pyllama-settings', JSON.stringify({{max_tokens: {tokens}}}))")
    page.get(server + "/")
    wait(page, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def test_a_model_without_template_starts_in_text_mode_and_chat_is_one_click_away(base_model_server, browser):
    page = fresh_page(browser, base_model_server)
    short_replies(page, base_model_server)
    assert pressed(page) == "text"
    note = page.find_element(By.CSS_SELECTOR, ".empty .note").text
    assert "no chat template" in note and "chatml format" in note
    type_and_send(page, "Once upon a time")
    reply = replies_done(page)[0]
    assert page.find_element(By.ID, "log").get_attribute("class") == "text-mode"
    requests = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(url.endswith("/v1/completions") for url in requests)  # a continuation, not a chat
    assert not any(url.endswith("/chat/completions") for url in requests)
    assert reply.find_element(By.CSS_SELECTOR, ".stats").text

    page.find_element(By.CSS_SELECTOR, "#mode button[data-mode='chat']").click()  # the same conversation, as a chat
    assert pressed(page) == "chat" and page.find_element(By.ID, "log").get_attribute("class") == ""
    type_and_send(page, "hello")
    replies_done(page, 2)
    requests = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(url.endswith("/v1/chat/completions") for url in requests)

    page.find_element(By.ID, "new-chat").click()  # a new conversation starts in the mode the model suits
    assert pressed(page) == "text"
    page.find_element(By.CSS_SELECTOR, "#conversations li:not(.current) .open").click()
    assert pressed(page) == "chat"  # a conversation keeps its mode


def test_docs_render_without_internet(base_model_server, browser):
    browser.get(base_model_server + "/docs")  # the browser reaches nothing but the server
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"), timeout=60)
    assert "/v1/chat/completions" in " ".join(texts(browser, ".opblock-summary-path"))


@pytest.mark.skipif(not demo.installed(), reason='the demo model is not installed (pip install ".[demo]")')
def test_the_demo_model_never_shows_a_turn_marker_in_either_mode(browser):
    with running_server(None, "--n_ctx", "2048", "--n_parallel", "1") as server:
        page = fresh_page(browser, server)
        short_replies(page, server, tokens=48)
        assert pressed(page) == "text"
        assert "gemma format" in page.find_element(By.CSS_SELECTOR, ".empty .note").text
        type_and_send(page, "Write a short poem about the sea.")
        replies_done(page, 1)
        page.find_element(By.CSS_SELECTOR, "#mode button[data-mode='chat']").click()
        for count, question in enumerate(("What is the capital of France?", "Write a short poem about the sea."), 2):
            type_and_send(page, question)
            replies_done(page, count)
        replies = texts(page, ".assistant .body")
        assert len(replies) == 3
        assert not [r for r in replies if any(marker in r for marker in TURN_MARKERS)], replies
