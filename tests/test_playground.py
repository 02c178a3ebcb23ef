"""The playground page, driven in a real headless Chromium (Debian's chromium + chromium-driver).

A real `rerankd serve` with the built-in model serves the page; selenium clicks through it as a
person would. What the page shows is checked against the API's own answer for the same
request, the code it offers to copy is run for real (curl, httpx, the cohere SDK), and the
page is checked with axe-core for accessibility problems.

Set RERANKD_SCREENSHOTS=docs/img to refresh the README's screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, run_server

API_KEY = "playground-test-key-0123456789"
CHINESE_QUERY = "苹果手机有哪些新功能?"
ENGLISH_QUERY = "What new features does the latest iPhone have?"
WAIT = 60  # seconds a page may take to show something (a bound, never a measurement)


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver; skip without them, except in CI (CI=true), which must run this."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    if os.environ.get("CI"):
        pytest.fail("chromium and chromium-driver are missing; CI must run the browser tests")
    pytest.skip("chromium and chromium-driver are not installed (make system-deps)")


@pytest.fixture
def server(shared_builtin_server: ServerProcess) -> ServerProcess:
    """The built-in model (shared with other files: these tests send passages of their own)."""
    return shared_builtin_server


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"RERANKD_API_KEYS": API_KEY}
    log_dir = tmp_path_factory.mktemp("pg-auth")
    with run_server(["--model", "builtin"], env=env, log_dir=log_dir) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1200,1500", "--lang=en-US", "--no-first-run",
        # The network is off: every host but 127.0.0.1 fails to resolve (no CDN can help).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, server: ServerProcess):
    return open_page(browser, server.url)


def open_page(driver, url: str):
    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_element("id", "model").get_attribute("value") == "builtin")
    return driver


def wait_for(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def run_rank(driver) -> None:
    """Click 'Rank passages' and wait for the page to finish (results, or an error)."""
    driver.execute_script("document.getElementById('status').textContent = ''")
    driver.find_element("id", "rank").click()
    wait_for(driver, lambda d: d.find_element("id", "status").text not in ("", "Ranking…"))


def shown_results(driver) -> list[dict]:
    rows = driver.find_elements("css selector", "#results li")
    return [
        {
            "index": int(row.get_attribute("data-index")),
            "score": float(row.get_attribute("data-score")),
            "score_text": row.find_element("css selector", ".score").text,
            "movement": row.find_element("css selector", ".movement").text,
            "position": row.find_element("css selector", ".position").text,
            "document": row.find_element("css selector", ".document").text,
        }
        for row in rows
    ]


def body_of(driver) -> dict:
    """The request the page sends, as its JSON tab shows it."""
    driver.find_element("id", "tab-json").click()
    return json.loads(driver.find_element("id", "snippet").get_attribute("value"))


def screenshot(driver, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("RERANKD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    driver.find_element("id", "tab-curl").click()
    driver.set_window_size(1400, 900)
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, height + 120))  # the window's frame takes some
    driver.save_screenshot(str(folder / name))
    driver.set_window_size(1200, 1500)


# Served from the package, nothing from elsewhere --------------------------------------------


def test_root_redirects_to_the_playground_and_every_asset_is_local(server: ServerProcess) -> None:
    with server.client(follow_redirects=False) as client:
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/playground"
        page = client.get("/playground")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert links and all(link.startswith(("/", "#")) for link in links), links
        for link in (link for link in links if link.startswith("/playground/")):
            asset = client.get(link)
            assert asset.status_code == 200, link
            # Any URL but the SVG namespace (an identifier, never fetched) would name a host.
            urls = re.findall(r"https?://[^\s\"')]+", asset.text)
            assert set(urls) <= {"http://www.w3.org/2000/svg"}, f"{link} names {urls}"
        assert "/playground" not in client.get("/openapi.json").json()["paths"]


def test_the_page_needs_no_key_but_the_api_still_does(secured: ServerProcess) -> None:
    with secured.client() as client:
        assert client.get("/").headers["location"] == "/playground"
        for path in ("/playground", "/playground/app.js", "/playground/style.css"):
            assert client.get(path).status_code == 200, path
        assert client.get("/v1/models").status_code == 401


# In the browser -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["english", "chinese"])
def test_the_page_shows_the_apis_ranking(
    page, server: ServerProcess, example: str, tmp_path: Path
) -> None:
    page.find_element("css selector", f"[data-example={example}]").click()
    run_rank(page)
    shown = shown_results(page)
    request = body_of(page)
    assert request["query"] == (ENGLISH_QUERY if example == "english" else CHINESE_QUERY)
    api = httpx.post(server.url + "/rerank", json=request, timeout=60)
    expected = api.json()["results"]
    assert [row["index"] for row in shown] == [r["index"] for r in expected]
    assert [row["score"] for row in shown] == [r["score"] for r in expected]
    assert [row["score_text"] for row in shown] == [f"{r['score']:.4f}" for r in expected]
    assert [row["document"] for row in shown] == [r["document"] for r in expected]
    count = len(request["documents"])
    for rank, row in enumerate(shown):
        moved = row["index"] - rank
        assert row["movement"] == (f"▲ {moved}" if moved > 0 else f"▼ {-moved}" if moved else "–")
        assert row["position"] == f"was #{row['index'] + 1} of {count}"
    assert page.find_element("id", "stat-model").text == "builtin"
    assert page.find_element("id", "stat-latency").text.endswith(" ms")
    warning = page.find_element("id", "warning")
    if example == "chinese":  # honest first run: the English-only model says so
        assert warning.is_displayed()
        assert "English-only" in warning.text
        assert "rerankd serve --model BAAI/bge-reranker-v2-m3" in warning.text
        screenshot(page, "playground.png", tmp_path)
    else:
        assert not warning.is_displayed()
        screenshot(page, "playground-english.png", tmp_path)


def test_tokens_and_cache_hits_are_shown(page) -> None:
    page.find_element("id", "query").send_keys(" (tokens test)")
    # Passages no other test sent: the built-in model caches document embeddings across
    # queries, so a seen passage would already be a cache hit.
    passages = page.find_element("id", "passages")
    passages.clear()
    passages.send_keys("\n".join(f"tokens test passage {i} about apples" for i in range(4)))
    run_rank(page)
    assert int(page.find_element("id", "stat-tokens").text) > 0
    assert page.find_element("id", "stat-cached").text == "0 of 4"
    run_rank(page)  # the same request again: every score comes from the cache
    assert page.find_element("id", "stat-tokens").text == "0"
    assert page.find_element("id", "stat-cached").text == "4 of 4"


def read_clipboard(driver, url: str) -> str:
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    return driver.execute_async_script("navigator.clipboard.readText().then(arguments[0])")


def without_usage(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "usage"}


def test_the_copied_curl_command_returns_the_same_json(page, server: ServerProcess) -> None:
    page.find_element("css selector", "[data-example=chinese]").click()
    run_rank(page)
    expected = httpx.post(server.url + "/rerank", json=body_of(page), timeout=60).json()
    page.find_element("id", "tab-curl").click()
    page.find_element("id", "copy").click()
    wait_for(page, lambda d: d.find_element("id", "copy-status").text == "Copied.")
    command = read_clipboard(page, server.url)
    assert command == page.find_element("id", "snippet").get_attribute("value")
    assert command.startswith("curl ") and "Authorization" not in command  # no key needed here
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert without_usage(json.loads(result.stdout)) == without_usage(expected)


def run_python(code: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("tab", ["tab-python", "tab-cohere"])
def test_the_python_snippets_run_and_rank_the_same(page, server: ServerProcess, tab: str) -> None:
    page.find_element("css selector", "[data-example=english]").click()
    expected = httpx.post(server.url + "/rerank", json=body_of(page), timeout=60).json()
    page.find_element("id", tab).click()
    printed = run_python(page.find_element("id", "snippet").get_attribute("value"))
    assert [int(line.split()[0]) for line in printed] == [r["index"] for r in expected["results"]]
    assert [float(line.split()[1]) for line in printed] == [
        round(r["score"], 4) for r in expected["results"]
    ]


def test_an_empty_query_shows_the_servers_error_as_it_is(page, server: ServerProcess) -> None:
    page.find_element("id", "query").clear()
    run_rank(page)
    response = httpx.post(server.url + "/rerank", json=body_of(page), timeout=60)
    assert response.status_code == 400
    error = page.find_element("id", "error")
    assert error.is_displayed()
    assert error.text == f"400 Bad Request: {response.json()['error']['message']}"
    assert shown_results(page) == []


def test_a_jsonl_file_supplies_the_passages(page, tmp_path: Path) -> None:
    upload = tmp_path / "passages.jsonl"
    lines = [
        json.dumps("Paris is the capital of France."),
        json.dumps({"text": "Bananas are yellow."}),
        json.dumps({"text": "A passage\nwith two lines about France."}),
    ]
    upload.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page.find_element("id", "query").clear()
    page.find_element("id", "query").send_keys("What is the capital of France?")
    page.find_element("id", "jsonl").send_keys(str(upload))
    wait_for(page, lambda d: "Loaded 3 passages" in d.find_element("id", "status").text)
    assert body_of(page)["documents"][2] == "A passage\nwith two lines about France."
    run_rank(page)
    assert len(shown_results(page)) == 3
    assert shown_results(page)[0]["document"] == "Paris is the capital of France."

    broken = tmp_path / "broken.jsonl"
    broken.write_text('"fine"\n{"title": "no text"}\n', encoding="utf-8")
    page.find_element("id", "jsonl").send_keys(str(broken))
    error = wait_for(page, lambda d: d.find_element("id", "error"))
    wait_for(page, lambda d: error.is_displayed())
    assert error.text == 'broken.jsonl, line 2: expected a string or an object with "text"'


def test_with_an_api_key_required(browser, secured: ServerProcess) -> None:
    browser.get(secured.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(secured.url + "/")
    error = browser.find_element("id", "error")
    wait_for(browser, lambda d: error.is_displayed())
    assert error.text.startswith("401 Unauthorized: ")
    key = browser.find_element("id", "api-key")
    key.send_keys(API_KEY)
    browser.find_element("id", "query").click()  # leaving the field stores the key
    wait_for(browser, lambda d: d.find_element("id", "model").get_attribute("value") == "builtin")
    assert browser.execute_script("return sessionStorage.getItem('rerankd.apiKey')") == API_KEY
    browser.find_element("css selector", "[data-example=english]").click()
    run_rank(browser)
    assert len(shown_results(browser)) == 4
    assert API_KEY not in browser.current_url
    # The snippets name the key's variable, never the key.
    browser.find_element("id", "tab-curl").click()
    command = browser.find_element("id", "snippet").get_attribute("value")
    assert API_KEY not in command and "$RERANKD_API_KEY" in command
    env = {**os.environ, "RERANKD_API_KEY": API_KEY}
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=60, env=env
    )
    assert [r["index"] for r in json.loads(result.stdout)["results"]] == [
        row["index"] for row in shown_results(browser)
    ]
    browser.find_element("id", "tab-python").click()
    code = browser.find_element("id", "snippet").get_attribute("value")
    assert API_KEY not in code
    assert len(run_python(code, {"RERANKD_API_KEY": API_KEY})) == 4
    # The key lives as long as the tab: a reload keeps it, and the models load with it.
    browser.refresh()
    wait_for(browser, lambda d: d.find_element("id", "model").get_attribute("value") == "builtin")
    assert browser.find_element("id", "api-key").get_attribute("value") == API_KEY
    assert not browser.find_element("id", "error").is_displayed()


INSTRUCTION_HOOK = """
const realFetch = window.fetch;
window.sentBodies = [];
window.fetch = async (url, init) => {
  if (init && init.body) window.sentBodies.push(JSON.parse(init.body));
  const response = await realFetch(url, init);
  if (String(url) !== "/info") return response;
  const info = await response.json();
  info.models.forEach((m) => {
    m.instruction = true;
    m.default_instruction = "Given a web search query, retrieve relevant passages";
  });
  return new Response(JSON.stringify(info), {status: 200, headers: {"Content-Type": "application/json"}});
};
"""


def test_the_instruction_field_appears_for_a_model_that_takes_one(browser, server) -> None:
    """/info is altered in the page (no test model takes an instruction yet: a tiny yes/no
    reranker would): the field shows, and `instruction` is sent only when it is filled."""
    open_page(browser, server.url)
    assert not browser.find_element("id", "instruction").is_displayed()
    hook = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": INSTRUCTION_HOOK}
    )
    try:
        browser.refresh()
        field = browser.find_element("id", "instruction")
        wait_for(browser, lambda d: field.is_displayed())
        assert field.get_attribute("placeholder").startswith("Given a web search query")
        run_rank(browser)
        field.send_keys("Find passages about phones")
        run_rank(browser)
        sent = browser.execute_script("return window.sentBodies")
        assert "instruction" not in sent[0]
        assert sent[1]["instruction"] == "Find passages about phones"
        # The built-in model takes none: the server's 400 is shown as it is.
        error = browser.find_element("id", "error")
        assert error.text.startswith("400 Bad Request: ") and "takes no instruction" in error.text
        assert body_of(browser)["instruction"] == "Find passages about phones"
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": hook["identifier"]}
        )


# Accessibility --------------------------------------------------------------------------------


def test_the_page_is_usable_from_the_keyboard(page) -> None:
    from selenium.webdriver.common.keys import Keys

    query = page.find_element("id", "query")
    query.click()
    query.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter ranks
    wait_for(page, lambda d: len(d.find_elements("css selector", "#results li")) == 4)
    curl = page.find_element("id", "tab-curl")
    curl.click()
    curl.send_keys(Keys.ARROW_RIGHT)  # arrow keys move between the code tabs
    active = page.switch_to.active_element
    assert active.get_attribute("id") == "tab-python"
    assert active.get_attribute("aria-selected") == "true"
    assert page.find_element("id", "snippet").get_attribute("value").startswith("import os")


def test_axe_finds_no_accessibility_violations(page) -> None:
    from axe_selenium_python import Axe

    page.find_element("css selector", "[data-example=chinese]").click()
    run_rank(page)  # results, a warning and stats on the page
    axe = Axe(page)
    axe.inject()
    report = axe.run()
    assert report["violations"] == [], axe.report(report["violations"])
    labels = page.execute_script(
        "return Array.from(document.querySelectorAll('input, select, textarea'))"
        ".filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id)"
    )
    assert labels == []


def test_spans_are_highlighted_at_their_exact_offsets(page, server: ServerProcess) -> None:
    """Offsets count code points: a family emoji (5 code points, 8 UTF-16 units) and CJK
    before a span would shift a highlight cut by JavaScript string indexes."""
    passages = [
        "👨\u200d👩\u200d👧 家族です。The iPhone 15 has a titanium frame. Bananas are yellow 🍌.",
        "東京は大きい！ Apples are red 🍎. The new iPhone camera records spatial video.",
        "Cafe\u0301 au lait 👍🏽. The iPhone battery lasts all day. Pie is sweet.",
    ]
    page.find_element("id", "query").clear()
    page.find_element("id", "query").send_keys("new iPhone features")
    box = page.find_element("id", "passages")
    box.clear()
    page.execute_script("arguments[0].value = arguments[1]", box, "\n".join(passages))
    page.find_element("id", "spans").click()
    run_rank(page)
    request = body_of(page)
    assert request["return_spans"] is True and request["documents"] == passages
    expected = httpx.post(server.url + "/rerank", json=request, timeout=60).json()["results"]
    rows = page.find_elements("css selector", "#results li")
    assert [int(row.get_attribute("data-index")) for row in rows] == [r["index"] for r in expected]
    for row, result in zip(rows, expected, strict=True):
        text = passages[result["index"]]
        document = row.find_element("css selector", ".document")
        assert document.get_attribute("textContent") == text  # nothing lost or doubled
        marks = document.find_elements("css selector", "mark")
        assert len(marks) == len(result["spans"]) >= 1
        for rank, span in enumerate(result["spans"], start=1):
            (mark,) = [m for m in marks if m.get_attribute("data-rank") == str(rank)]
            assert mark.get_attribute("textContent") == text[span["start"] : span["end"]]
            assert float(mark.get_attribute("data-score")) == span["score"]
            assert f"span-{min(rank, 3)}" in mark.get_attribute("class").split()
    page.find_element("id", "spans").click()  # off again: no spans asked, none marked
    run_rank(page)
    assert "return_spans" not in body_of(page)
    assert not page.find_elements("css selector", "#results mark")


def resources_loaded(driver) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def test_docs_and_redoc_render_with_the_network_off(browser, server: ServerProcess) -> None:
    """Swagger UI and ReDoc come from files rerankd ships: no request leaves 127.0.0.1."""
    browser.get(server.url + "/docs")
    title = wait_for(browser, lambda d: d.find_elements("css selector", ".swagger-ui .info .title"))
    assert "rerankd" in title[0].text
    wait_for(browser, lambda d: "/v1/rerank" in d.find_element("tag name", "body").text)
    loaded = resources_loaded(browser)
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in loaded)
    assert all(url.startswith(server.url) for url in loaded), loaded

    browser.get(server.url + "/redoc")
    wait_for(browser, lambda d: "/v2/rerank" in d.find_element("tag name", "body").text)
    loaded = resources_loaded(browser)
    assert any(url.endswith("/docs/assets/redoc.standalone.js") for url in loaded)
    assert all(url.startswith(server.url) for url in loaded), loaded


def test_the_docs_pages_name_no_other_host(server: ServerProcess) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(server.url + path, timeout=60).text
        assert not re.findall(r"(?:src|href)=[\"']https?://", page), page
