"""The chat page at / in Debian's headless chromium: a real server streams into it, and a stand-in
for fetch (installed in the page) plays scripted replies where a test needs exact text, timings,
a reply that never ends, or hostile model output."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import REPO
from server_process import running_server
from media_models import png, square

ARTIFACTS = REPO / "test-artifacts"
MARKDOWN = ("## 行星\nThe **planets** are *eight*:\n1. Mercury\n2. Venus\n   - hot\n\n"
            "| planet | moons |\n|---|--:|\n| Earth | 1 |\n| Mars | 2 |\n\n"
            "```python\ndef orbit(r):\n    return r ** 1.5  # Kepler\n```\n"
            "Energy: $E = mc^2$, and $$\\frac{a}{b}$$ Use `len()`; see [docs](https://example.org/x).")

# Scripted replies: window.fetch answers chat requests from window.script (the last one repeats)
# and records each request; every other request goes to the real server.
FAKE_FETCH = """
window.script = arguments[0];
window.sent = [];
const realFetch = window.fetch.bind(window);
window.fetch = (url, init) => {
  if (!String(url).endsWith("chat/completions")) return realFetch(url, init);
  window.sent.push({body: JSON.parse(init.body), headers: init.headers});
  const reply = window.script.length > 1 ? window.script.shift() : window.script[0];
  if (reply.status) {
    return Promise.resolve(new Response(JSON.stringify(reply.body), {status: reply.status,
      headers: {"Content-Type": "application/json"}}));
  }
  const encoder = new TextEncoder();
  const body = new ReadableStream({async start(controller) {
    init.signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
    for (const chunk of reply.chunks) {
      await new Promise(resolve => setTimeout(resolve, reply.delay || 0));
      if (init.signal.aborted) return;
      controller.enqueue(encoder.encode("data: " + JSON.stringify(chunk) + "\\n\\n"));
    }
    if (reply.hang) return;  // a reply that goes on until stopped
    controller.enqueue(encoder.encode("data: [DONE]\\n\\n"));
    controller.close();
  }});
  return Promise.resolve(new Response(body, {status: 200, headers: {"Content-Type": "text/event-stream"}}));
};
"""


def reply(*pieces: str, reasoning: tuple[str, ...] = (), timings: dict | None = None, delay: int = 0,
          hang: bool = False) -> dict:
    """One scripted streamed reply: OpenAI chunks for each piece, then the final chunk."""
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"reasoning_content": r}, "finish_reason": None}]} for r in reasoning]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    if not hang:
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **({"timings": timings} if timings else {})})
    return {"chunks": chunks, "delay": delay, "hang": hang}


@pytest.fixture(scope="module")
def server(tiny_spm):
    # a chat template chosen: the page starts in chat mode (a model with none starts in text mode)
    with running_server(tiny_spm[0], "--n_ctx", "1024", "--n_parallel", "2", "--chat-template", "chatml") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,900", "--lang=zh-CN"):
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def wait(browser, condition, timeout: float = 20):
    return WebDriverWait(browser, timeout).until(lambda d: condition(d))


def ready(browser):
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


@pytest.fixture
def page(server, browser):
    """The page with nothing kept from an earlier test (no conversations, default settings)."""
    return fresh_page(browser, server)


def fresh_page(browser, server: str):
    browser.set_window_size(1100, 900)
    browser.get(server + "/")
    ready(browser)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        localStorage.clear();
        store.db.close();
        const request = indexedDB.deleteDatabase("pyllama-chat");
        request.onsuccess = request.onerror = request.onblocked = () => done();
    """)
    browser.get(server + "/")
    ready(browser)
    return browser


def script(browser, *replies: dict) -> None:
    browser.execute_script(FAKE_FETCH, list(replies))


def sent(browser) -> list[dict]:
    return browser.execute_script("return window.sent")


def type_and_send(browser, text: str) -> None:
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def replies_done(browser, count: int = 1) -> list:
    return wait(browser, lambda d: (lambda found: found if len(found) >= count else False)(
        d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='done']")))


def reload(browser) -> None:
    """Reload once every conversation on screen is written (a user cannot reload within milliseconds)."""
    wait(browser, lambda d: d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const byId = list => JSON.stringify([...list].sort((a, b) => a.id < b.id ? -1 : 1));
        store.all().then(kept => done(byId(kept) === byId(conversations)));
    """))
    browser.refresh()
    ready(browser)


def texts(browser, selector: str) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, selector)]


def streams_timings(base: str) -> bool:
    """Whether the server's last stream chunk carries llama-server's ``timings``."""
    request = urllib.request.Request(base + "v1/chat/completions", headers={"Content-Type": "application/json"},
                                     data=b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": true}')
    with urllib.request.urlopen(request, timeout=60) as response:
        events = [line[6:] for line in response.read().decode().splitlines() if line.startswith("data: {")]
    return "timings" in json.loads(events[-1])


def test_root_serves_one_self_contained_page_whose_script_the_policy_allows(server):
    with urllib.request.urlopen(server + "/") as response:
        html = response.read().decode()
    assert response.status == 200 and "<title>pyllama chat</title>" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere: works offline
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1 and "<script src" not in html
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert f"script-src 'sha256-{digest}';" in policy, f"after editing the script, put 'sha256-{digest}' in the CSP"
    assert "connect-src 'self'" in policy and "default-src 'self'" in policy


def test_chat_with_the_server_and_it_is_still_there_after_a_reload(page):
    wait(page, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "tiny-spm.gguf")
    type_and_send(page, "你好, name the planets")
    reply_text = replies_done(page)[0].find_element(By.CSS_SELECTOR, ".body").text
    assert texts(page, ".user .bubble") == ["你好, name the planets"]
    assert reply_text.strip()  # random weights: random bytes, some not UTF-8
    stats = page.find_element(By.CSS_SELECTOR, ".assistant .stats")
    assert re.search(r"^\d+ tokens · .*to first token", stats.text), stats.text
    assert stats.get_attribute("data-source") == ("server" if streams_timings(page.current_url) else "browser")

    reload(page)
    assert texts(page, ".user .bubble") == ["你好, name the planets"]
    assert texts(page, ".assistant .body") == [reply_text]
    assert texts(page, "#conversations .open") == ["你好, name the planets"]
    assert page.find_element(By.ID, "title").text == "你好, name the planets"


def test_markdown_code_tables_and_math(page):
    script(page, reply(*re.findall(r".{1,7}", MARKDOWN, re.S)))  # streamed in small pieces
    type_and_send(page, "show me")
    body = replies_done(page)[0].find_element(By.CSS_SELECTOR, ".body")
    assert body.find_element(By.CSS_SELECTOR, "h2").text == "行星"
    assert texts(body, "ol > li")[0] == "Mercury" and texts(body, "ol li ul li") == ["hot"]
    assert [texts(row, "td") for row in body.find_elements(By.CSS_SELECTOR, "tbody tr")] == [["Earth", "1"], ["Mars", "2"]]
    assert body.find_element(By.CSS_SELECTOR, "tbody td:nth-child(2)").value_of_css_property("text-align") == "right"
    code = body.find_element(By.CSS_SELECTOR, ".codeblock code")
    assert code.text == "def orbit(r):\n    return r ** 1.5  # Kepler"
    assert texts(code, ".tok-kw") == ["def", "return"] and texts(code, ".tok-com") == ["# Kepler"]
    assert texts(code, ".tok-num") == ["1.5"] and texts(code, ".tok-fn") == ["orbit"]
    assert body.find_element(By.CSS_SELECTOR, ".codeblock .head span").text == "python"
    inline_math, block_math = body.find_elements(By.CSS_SELECTOR, "math")
    assert inline_math.find_element(By.CSS_SELECTOR, "msup").text.replace("\n", "") == "c2"
    assert block_math.get_attribute("display") == "block" and block_math.find_elements(By.CSS_SELECTOR, "mfrac")
    assert body.find_element(By.CSS_SELECTOR, "p code").text == "len()"
    link = body.find_element(By.CSS_SELECTOR, "a")
    assert link.get_attribute("href") == "https://example.org/x" and link.get_attribute("rel") == "noopener noreferrer"
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.save_screenshot(str(ARTIFACTS / "chat-page.png"))


HOSTILE = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    "[click me](javascript:window.pwned=3)",
    "![pic](javascript:window.pwned=4)",
    "[x](JaVaScRiPt:window.pwned=5) <a href=\"javascript:window.pwned=6\">a</a>",
    '| a | b |\n|---|---|\n| <img src=x onerror="window.pwned=7"> | <svg onload="window.pwned=8"> |',
    '```"><img src=x onerror="window.pwned=9">\n<script>window.pwned=10</script>\n```',
    '$\\text{<img src=x onerror="window.pwned=11">}$',
    '<iframe src="javascript:window.pwned=12"></iframe> <style>body{display:none}</style>',
]


def test_model_output_is_untrusted_it_renders_as_text_and_never_runs(page):
    hostile = "\n\n".join(HOSTILE)
    script(page, reply("<think>", '<img src=x onerror="window.pwned=13">', "</think>", hostile))
    type_and_send(page, '<img src=x onerror="window.pwned=14"> in the title too')
    done = replies_done(page)[0]
    time.sleep(0.3)  # an image error handler would have run by now
    assert page.execute_script("return window.pwned") is None
    for where in ("#log", "#conversations", "#topbar"):
        area = page.find_element(By.CSS_SELECTOR, where)
        assert not area.find_elements(By.CSS_SELECTOR, "img, script, iframe, svg, style, object, embed")
    links = [a.get_attribute("href") for a in page.find_elements(By.CSS_SELECTOR, "#log a")]
    assert all(href.startswith(("http://", "https://", "mailto:")) for href in links), links
    shown = done.find_element(By.CSS_SELECTOR, ".body").text
    assert '<img src=x onerror="window.pwned=1">' in shown and "<script>window.pwned=2</script>" in shown
    assert "[click me](javascript:window.pwned=3)" in shown
    assert page.find_element(By.CSS_SELECTOR, "#conversations .open").text.startswith("<img src=x")
    done.find_element(By.CSS_SELECTOR, "details.think summary").click()
    assert 'onerror="window.pwned=13"' in done.find_element(By.CSS_SELECTOR, ".thought").text

    # and were markup ever to slip through, the page's policy still blocks inline handlers
    page.execute_script("document.getElementById('log').insertAdjacentHTML('beforeend', "
                        "'<img src=x onerror=\"window.pwned=99\">')")
    time.sleep(0.3)
    assert page.execute_script("return window.pwned") is None


def test_stop_keeps_the_partial_reply_by_button_and_by_escape(page):
    script(page, reply("partial ", "answer ", hang=True, delay=20))
    type_and_send(page, "tell me a long story")
    send = page.find_element(By.ID, "send")
    wait(page, lambda d: "partial answer" in d.find_element(By.CSS_SELECTOR, ".assistant .body").text)
    assert send.text == "Stop"
    send.click()
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='stopped']"))
    assert send.text == "Send" and "stopped" in page.find_element(By.CSS_SELECTOR, ".assistant .meta").text

    type_and_send(page, "another one")
    wait(page, lambda d: len(texts(d, ".assistant .body")) == 2 and "partial answer" in texts(d, ".assistant .body")[1])
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='stopped']")) == 2)
    # what was said before the stop is kept and sent back as context
    assert sent(page)[1]["body"]["messages"][1] == {"role": "assistant", "content": "partial answer "}
    reload(page)
    assert texts(page, ".assistant .body") == ["partial answer", "partial answer"]


def test_regenerate_and_edit_then_resend(page):
    script(page, reply("first"), reply("second"), reply("third"))
    type_and_send(page, "hello")
    replies_done(page)
    page.find_element(By.XPATH, "//div[contains(@class,'assistant')]//button[text()='Regenerate']").click()
    wait(page, lambda d: texts(d, ".assistant[data-state='done'] .body") == ["second"])
    assert [m["content"] for m in sent(page)[1]["body"]["messages"]] == ["hello"]  # not the replaced reply

    page.find_element(By.XPATH, "//div[contains(@class,'user')]//button[text()='Edit']").click()
    editor = page.find_element(By.CSS_SELECTOR, ".editor textarea")
    editor.clear()
    editor.send_keys("hello again")
    editor.send_keys(Keys.ENTER)
    wait(page, lambda d: texts(d, ".assistant[data-state='done'] .body") == ["third"])
    assert texts(page, ".user .bubble") == ["hello again"]
    assert [m["content"] for m in sent(page)[2]["body"]["messages"]] == ["hello again"]
    reload(page)
    assert texts(page, ".user .bubble") == ["hello again"] and texts(page, ".assistant .body") == ["third"]


def test_copy_a_message_and_a_code_block(page):
    page.execute_script("window.copied = []; navigator.clipboard.writeText = text => "
                        "{ window.copied.push(text); return Promise.resolve(); };")
    script(page, reply("Run:\n```sh\npip install pyllama-cffi\n```\n", "done."))
    type_and_send(page, "how?")
    done = replies_done(page)[0]
    code_button = done.find_element(By.CSS_SELECTOR, ".copy-code")
    code_button.click()
    wait(page, lambda d: code_button.text == "Copied")
    done.find_element(By.XPATH, ".//div[@class='actions']/button[text()='Copy']").click()
    page.find_element(By.XPATH, "//div[contains(@class,'user')]//button[text()='Copy']").click()
    wait(page, lambda d: len(d.execute_script("return window.copied")) == 3)
    assert page.execute_script("return window.copied") == [
        "pip install pyllama-cffi", "Run:\n```sh\npip install pyllama-cffi\n```\ndone.", "how?"]


def test_conversations_new_switch_rename_delete(page):
    script(page, reply("answer one"), reply("answer two"))
    type_and_send(page, "first question")
    replies_done(page)
    page.find_element(By.ID, "new-chat").click()
    assert not page.find_elements(By.CSS_SELECTOR, ".msg") and page.find_element(By.ID, "title").text == "New chat"
    type_and_send(page, "second question")
    replies_done(page)
    assert texts(page, "#conversations .open") == ["second question", "first question"]  # newest first

    page.find_elements(By.CSS_SELECTOR, "#conversations .open")[1].click()
    assert texts(page, ".user .bubble") == ["first question"] and texts(page, ".assistant .body") == ["answer one"]
    current = page.find_element(By.CSS_SELECTOR, "#conversations li.current")
    current.find_element(By.CSS_SELECTOR, "button[title='Rename']").click()
    field = page.find_element(By.CSS_SELECTOR, "#conversations input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("Planets 行星", Keys.ENTER)
    assert page.find_element(By.ID, "title").text == "Planets 行星"

    reload(page)  # names, order and the open conversation are kept
    assert sorted(texts(page, "#conversations .open")) == ["Planets 行星", "second question"]
    assert page.find_element(By.CSS_SELECTOR, "#conversations li.current .open").text == "Planets 行星"
    assert texts(page, ".assistant .body") == ["answer one"]

    page.find_element(By.CSS_SELECTOR, "#conversations li.current button[title='Delete']").click()
    page.switch_to.alert.accept()
    assert texts(page, "#conversations .open") == ["second question"]
    assert texts(page, ".user .bubble") == ["second question"]
    reload(page)
    assert texts(page, "#conversations .open") == ["second question"]


def test_deleting_a_conversation_while_it_streams_stops_it_for_good(page):
    script(page, reply("still ", "going ", hang=True, delay=20))
    type_and_send(page, "a long one")
    wait(page, lambda d: "still going" in d.find_element(By.CSS_SELECTOR, ".assistant .body").text)
    page.find_element(By.CSS_SELECTOR, "#conversations li.current button[title='Delete']").click()
    page.switch_to.alert.accept()
    wait(page, lambda d: d.find_element(By.ID, "send").text == "Send")
    assert texts(page, "#conversations .open") == [] and not page.find_elements(By.CSS_SELECTOR, ".msg")
    reload(page)
    assert texts(page, "#conversations .open") == []


def open_settings(page):
    page.find_element(By.ID, "open-settings").click()
    return page.find_element(By.ID, "settings-form")


def test_settings_are_kept_and_sent(page):
    form = open_settings(page)
    for name, value in [("systemPrompt", "You are terse."), ("temperature", "0.3"), ("top_p", "0.5"),
                        ("max_tokens", "64"), ("apiKey", "s3cret")]:
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "select[name='theme'] option[value='dark']").click()
    page.find_element(By.ID, "save-settings").click()
    # the dialog's "close" event, which stores the settings, is dispatched as a later task
    wait(page, lambda d: d.execute_script("return document.documentElement.dataset.theme") == "dark")

    reload(page)
    assert page.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(22, 24, 29)"
    form = open_settings(page)
    assert form.find_element(By.NAME, "temperature").get_attribute("value") == "0.3"
    assert form.find_element(By.NAME, "apiKey").get_attribute("value") == "s3cret"
    form.find_element(By.CSS_SELECTOR, "button[value='cancel']").click()
    script(page, reply("ok"))
    type_and_send(page, "hi")
    replies_done(page)
    request = sent(page)[0]
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    body = request["body"]
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stream"]) == (0.3, 0.5, 64, True)
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.save_screenshot(str(ARTIFACTS / "chat-page-dark.png"))


def stored_temperature(page):
    return page.execute_script("return JSON.parse(localStorage.getItem('pyllama-settings') || '{}').temperature")


def set_temperature(page, value: str):
    field = open_settings(page).find_element(By.NAME, "temperature")
    field.clear()
    field.send_keys(value)
    return field


def test_settings_cancelled_or_out_of_range_are_not_kept(page):
    set_temperature(page, "0.3")
    page.find_element(By.ID, "save-settings").click()
    wait(page, lambda d: stored_temperature(d) == 0.3)  # stored by the "close" event, a later task
    set_temperature(page, "0.9").send_keys(Keys.ESCAPE)
    wait(page, lambda d: d.find_element(By.ID, "settings").get_attribute("open") is None)
    assert stored_temperature(page) == 0.3
    set_temperature(page, "7")
    page.find_element(By.ID, "save-settings").click()
    assert page.find_element(By.ID, "settings").get_attribute("open") is not None  # refused: above 2
    assert stored_temperature(page) == 0.3


def test_under_each_reply_the_server_timings_or_a_measurement(page):
    timings = {"prompt_n": 12, "prompt_ms": 84.2, "prompt_per_second": 142.5, "predicted_n": 17,
               "predicted_ms": 850.0, "predicted_per_second": 20.0}
    script(page, reply("from ", "the ", "server", timings=timings), reply("a", "b", "c", "d", "e", delay=40))
    type_and_send(page, "one")
    first = replies_done(page)[0].find_element(By.CSS_SELECTOR, ".stats")
    assert first.text == "17 tokens · 20.0 tokens/s · 84 ms to first token"
    assert first.get_attribute("data-source") == "server" and "12 tokens" in first.get_attribute("title")
    type_and_send(page, "two")
    second = replies_done(page, 2)[1].find_element(By.CSS_SELECTOR, ".stats")
    assert second.get_attribute("data-source") == "browser"
    tokens, rate, first_token = re.fullmatch(r"(\d+) tokens · ([\d.]+) tokens/s · (\d+) ms to first token",
                                             second.text).groups()
    assert tokens == "5" and 1 < float(rate) < 40 and int(first_token) >= 30  # 40 ms between pieces


def test_thinking_is_shown_collapsed_and_not_sent_back(page):
    script(page, reply("<think>", "Two and two ", "make four.", "</think>", "It is **4**."),
           reply("ok", reasoning=("The user ", "agrees.")))
    type_and_send(page, "2+2?")
    done = replies_done(page)[0]
    think = done.find_element(By.CSS_SELECTOR, "details.think")
    assert think.get_attribute("open") is None and think.find_element(By.TAG_NAME, "summary").text == "Thoughts"
    assert done.find_element(By.CSS_SELECTOR, ".body").text == "It is 4."
    think.find_element(By.TAG_NAME, "summary").click()
    assert think.find_element(By.CSS_SELECTOR, ".thought").text == "Two and two make four."
    type_and_send(page, "thanks")
    second = replies_done(page, 2)[1]
    assert second.find_element(By.CSS_SELECTOR, "details.think").get_attribute("open") is None
    assert second.find_element(By.CSS_SELECTOR, ".thought").get_attribute("textContent") == "The user agrees."
    assert sent(page)[1]["body"]["messages"][1] == {"role": "assistant", "content": "It is **4**."}


def test_keyboard_enter_sends_shift_enter_breaks_the_line(page):
    script(page, reply("ok"))
    box = page.find_element(By.ID, "input")
    box.send_keys("line one", Keys.SHIFT, Keys.ENTER, Keys.NULL, "line two")
    assert box.get_attribute("value") == "line one\nline two" and not page.find_elements(By.CSS_SELECTOR, ".msg")
    box.send_keys(Keys.ENTER)
    replies_done(page)
    assert page.find_element(By.CSS_SELECTOR, ".user .bubble").text == "line one\nline two"
    assert box.get_attribute("value") == ""


def test_a_server_error_is_shown_on_the_reply(page):
    script(page, {"status": 401, "body": {"error": {"message": "invalid API key", "type": "invalid_request_error"}}})
    type_and_send(page, "hi")
    error = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='error'] .error"))[0]
    assert error.text == "Error: invalid API key (set the API key in Settings)"
    assert page.find_element(By.ID, "send").text == "Send"


def test_phone_layout(page):
    script(page, reply(MARKDOWN))
    type_and_send(page, "planets")
    replies_done(page)
    page.set_window_size(390, 844)
    sidebar = page.find_element(By.ID, "sidebar")
    wait(page, lambda d: d.execute_script("return arguments[0].getBoundingClientRect().right", sidebar) <= 0)
    assert page.execute_script("return document.documentElement.scrollWidth") <= 390  # nothing runs off the side
    page.find_element(By.ID, "menu").click()
    wait(page, lambda d: d.execute_script("return arguments[0].getBoundingClientRect().left", sidebar) == 0)
    page.find_element(By.ID, "new-chat").click()  # choosing closes the list
    wait(page, lambda d: d.execute_script("return arguments[0].getBoundingClientRect().right", sidebar) <= 0)
    page.find_element(By.CSS_SELECTOR, "#menu").click()
    wait(page, lambda d: d.execute_script("return arguments[0].getBoundingClientRect().left", sidebar) == 0)
    page.find_element(By.CSS_SELECTOR, "#conversations .open").click()
    wait(page, lambda d: d.execute_script("return arguments[0].getBoundingClientRect().right", sidebar) <= 0)
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.save_screenshot(str(ARTIFACTS / "chat-page-phone.png"))


@pytest.fixture(scope="module")
def vision_server(tiny_vision):
    with running_server(tiny_vision[0], "--mmproj", str(tiny_vision[1]), "--n_ctx", "512", "--n_parallel", "1") as base:
        yield base


def test_no_attach_button_where_the_server_cannot_see_images(page):
    assert not page.find_element(By.ID, "attach").is_displayed()


def test_an_attached_image_is_sent_as_an_image_part_and_kept(browser, vision_server, tmp_path):
    page = fresh_page(browser, vision_server)
    assert page.find_element(By.ID, "attach").is_displayed()
    path = tmp_path / "red.png"
    path.write_bytes(png(square((255, 0, 0))))

    def attach() -> None:
        page.find_element(By.ID, "file").send_keys(str(path))
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments img"))

    attach()
    type_and_send(page, "what colour?")
    replies_done(page)  # the server with the projector read the image and answered
    assert not page.find_elements(By.CSS_SELECTOR, "#attachments img")
    script(page, reply("red"))
    attach()
    page.find_element(By.CSS_SELECTOR, "#attachments button").click()  # removed again
    assert not page.find_elements(By.CSS_SELECTOR, "#attachments img")
    attach()
    type_and_send(page, "and this one?")
    replies_done(page, 2)
    messages = sent(page)[0]["body"]["messages"]
    for message, text in zip(messages[::2], ("what colour?", "and this one?")):
        image, words = message["content"]
        assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert words == {"type": "text", "text": text}
    assert isinstance(messages[1]["content"], str)  # the reply goes back as text
    reload(page)
    thumbs = page.find_elements(By.CSS_SELECTOR, ".user .thumbs img")
    assert len(thumbs) == 2 and all(t.get_attribute("src").startswith("data:image/jpeg;base64,") for t in thumbs)
