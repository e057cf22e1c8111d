"""The chat page at / in Debian's headless chromium: it streams a reply and renders markdown."""

from __future__ import annotations

import shutil
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import REPO
from server_process import running_server

ARTIFACTS = REPO / "test-artifacts"
MARKDOWN = "## 行星\nThe **planets** are:\n1. Mercury\n2. Venus\n\n```python\nprint('你好')\n```\nUse `len()`."


@pytest.fixture(scope="module")
def page(tiny_spm):
    with running_server(tiny_spm[0], "--n_ctx", "1024", "--n_parallel", "2") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1000,900", "--lang=zh-CN"):
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def test_root_serves_a_self_contained_page(page):
    with urllib.request.urlopen(page + "/") as response:
        html = response.read().decode()
    assert response.status == 200 and "<title>pyllama chat</title>" in html
    assert "src=\"http" not in html and "href=\"http" not in html  # nothing from a CDN


def test_chat_in_the_browser(page, browser):
    browser.get(page + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model").text == "tiny-spm.gguf")
    box = browser.find_element(By.ID, "input")
    box.send_keys("你好, name the planets")
    box.send_keys(Keys.ENTER)
    reply = WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done='true']"))[0]
    assert browser.find_element(By.CSS_SELECTOR, ".user").text == "你好, name the planets"
    assert reply.text.strip()
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")

    # the renderer the streamed text goes through: markdown with a code block, Chinese intact
    browser.execute_script("bubble('assistant', arguments[0]);", MARKDOWN)
    rendered = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
    assert rendered.find_element(By.CSS_SELECTOR, "h2").text == "行星"
    assert rendered.find_element(By.CSS_SELECTOR, "pre code").text == "print('你好')"
    assert [li.text for li in rendered.find_elements(By.CSS_SELECTOR, "ol li")] == ["Mercury", "Venus"]
    assert rendered.find_element(By.CSS_SELECTOR, "strong").text == "planets"
    assert browser.execute_script("return renderMarkdown('<img src=x onerror=alert(1)>')").startswith("<p>&lt;img")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "chat-page.png"))
