"""End to end in headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

The running Streamlit app, against a served Bento and the sidecar: upload a
photo, wait for the prediction, screenshot. And the Bento's /dashboard: the
numbers on the page must match /metrics. Screenshots go to a temporary folder,
or to docs/screenshots/ with TIKKA_UPDATE_SCREENSHOTS=1 (`make screenshots`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    if os.environ.get("TIKKA_UPDATE_SCREENSHOTS") == "1":
        target = helpers.ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: `make browser` installs them (apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tikka-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def streamlit_app(llm_bento, tmp_path_factory):
    env = {**os.environ, "TIKKA_API_URL": llm_bento}
    log = (tmp_path_factory.mktemp("streamlit") / "streamlit.log").open("wb")
    # Run from frontend/ so that frontend/.streamlit/config.toml applies, as in `make stack`.
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", "0", "--server.address", "127.0.0.1"],
        cwd=helpers.ROOT / "frontend",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{helpers.listening_port(process, 60)}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"streamlit did not start: {Path(log.name).read_text()[-2000:]}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def wait_for(driver, condition, timeout: float = 90):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Pages that redraw (the dashboard, Streamlit's reruns) replace elements between a
    # lookup and a read: such a poll just counts as "not yet".
    return WebDriverWait(
        driver, timeout, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition)


def test_upload_a_photo_and_see_the_prediction(browser, streamlit_app, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(streamlit_app)
    file_input = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
    file_input.send_keys(str(helpers.ROOT / "tests" / "data" / "pizza.jpg"))
    header = wait_for(
        browser,
        lambda d: next((h for h in d.find_elements(By.CSS_SELECTOR, "h2") if h.text.strip() == "Pizza"), None),
    )
    assert header.is_displayed()
    wait_for(browser, lambda d: "Sent: 640x400 JPEG" in d.find_element(By.TAG_NAME, "body").text)
    wait_for(browser, lambda d: "Classifier: ready" in d.find_element(By.TAG_NAME, "body").text)
    button = wait_for(
        browser,
        lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if "where the model looked" in b.text), None),
    )
    button.click()
    wait_for(browser, lambda d: "Grad-CAM · grid 7x7" in d.find_element(By.TAG_NAME, "body").text)
    # Every image (the heatmap among them) decoded before the screenshot.
    wait_for(
        browser,
        lambda d: d.execute_script(
            "return [...document.images].every(image => image.complete && image.naturalWidth > 0)"
        ),
    )
    path = screenshots / "app.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 20_000


def test_phone_photos_heic_and_avif_are_classified_in_the_app(browser, streamlit_app, tmp_path):
    """What iPhones (HEIC) and Android phones (AVIF) save: the uploader takes them, the app turns
    them upright into the JPEG it sends, and the answer shows."""
    from selenium.webdriver.common.by import By

    browser.get(streamlit_app)
    accepted = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]")).get_attribute("accept")
    assert {".heic", ".avif", ".gif"} <= set(accepted.split(",")), accepted
    for name, fmt, dish in (("IMG_0001.HEIC", "HEIF", "pizza"), ("PXL_0001.avif", "AVIF", "guacamole")):
        path, photo, title = tmp_path / name, helpers.photo_image(f"{dish}.jpg"), dish.capitalize()
        path.write_bytes(helpers.phone_photo(fmt, photo))
        browser.get(streamlit_app)
        file_input = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
        file_input.send_keys(str(path))
        header = wait_for(
            browser,
            lambda d, title=title: next(
                (h for h in d.find_elements(By.CSS_SELECTOR, "h2") if h.text.strip() == title), None
            ),
        )
        assert header.is_displayed(), name
        # The preview is the JPEG the app sent, upright, as the photo was taken.
        sent = f"Sent: {photo.width}x{photo.height} JPEG"
        wait_for(browser, lambda d, sent=sent: sent in d.find_element(By.TAG_NAME, "body").text)


def parse(metrics_text: str):
    for line in metrics_text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            yield match.group(1), labels, float(match.group(3))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile, written independently of the page's JavaScript."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] == 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def expected_dashboard(metrics_text: str):
    counts = defaultdict(lambda: defaultdict(float))
    latency = defaultdict(lambda: defaultdict(float))
    batches = 0.0
    llm_calls = defaultdict(float)
    for name, labels, value in parse(metrics_text):
        if labels.get("service_name") == "tikka" and name == "bentoml_service_request_total":
            counts[labels["endpoint"]][labels["http_response_code"][0] + "xx"] += value
        elif labels.get("service_name") == "tikka" and name == "bentoml_service_request_duration_seconds_bucket":
            latency[labels["endpoint"]][float(labels["le"])] += value
        elif name == "bentoml_service_adaptive_batch_size_count" and labels.get("method_name") == "classify":
            batches += value
        elif name == "tikka_llm_seconds_count":
            llm_calls[labels["task"]] += value
    return counts, latency, batches, llm_calls


DASHBOARD_SNAPSHOT = """
const fields = row => Object.fromEntries(
  [...row.querySelectorAll("td[data-field]")].map(c => [c.dataset.field, c.dataset.value]));
return {
  rows: Object.fromEntries(
    [...document.querySelectorAll("#endpoints tr[data-endpoint]")].map(r => [r.dataset.endpoint, fields(r)])),
  llm: Object.fromEntries(
    [...document.querySelectorAll("#llm tr[data-task]")].map(r => [r.dataset.task, fields(r).calls])),
  batches: document.getElementById("batch-count").dataset.value,
  uptime: document.getElementById("uptime").dataset.value,
};
"""


def test_dashboard_numbers_match_metrics(browser, llm_bento, screenshots, photo):
    from selenium.webdriver.common.by import By

    image = {"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}
    for _ in range(3):
        assert httpx.post(f"{llm_bento}/predict", files=image, timeout=60).status_code == 200
    assert httpx.post(f"{llm_bento}/predict", files={"image": ("x.jpg", b"nope", "image/jpeg")}).status_code == 400
    assert httpx.post(f"{llm_bento}/predict", files={"file": ("x.jpg", b"nope", "image/jpeg")}).status_code == 422
    assert httpx.post(f"{llm_bento}/predict", json={}).status_code == 415
    assert (
        httpx.post(
            f"{llm_bento}/llm/dish", json={"dish": "pizza", "task": "origin", "max_tokens": 4}, timeout=60
        ).status_code
        == 200
    )

    browser.get(f"{llm_bento}/dashboard?every=1")
    wait_for(browser, lambda d: d.find_element(By.ID, "updated").text != "never")
    # One script reads the whole page: it runs between two re-renders, so no cell goes stale
    # under the reading (every=1 redraws the tables each second).
    shown = browser.execute_script(DASHBOARD_SNAPSHOT)
    rows, llm_rows = shown["rows"], {task: float(calls) for task, calls in shown["llm"].items()}
    batch_count, uptime = float(shown["batches"]), float(shown["uptime"])
    counts, latency, batches, llm_calls = expected_dashboard(httpx.get(f"{llm_bento}/metrics").text)

    assert "/metrics" not in rows and "/dashboard" not in rows and "/readyz" not in rows
    predict = rows["/predict"]
    assert float(predict["2xx"]) == counts["/predict"]["2xx"] >= 3
    assert float(predict["4xx"]) == counts["/predict"]["4xx"] >= 3, "every status class counts, not only the first"
    assert float(predict["total"]) == sum(counts["/predict"].values())
    for quantile, field in ((0.5, "p50"), (0.95, "p95")):
        assert float(predict[field]) == pytest.approx(histogram_quantile(quantile, latency["/predict"]), rel=1e-6)
    assert batch_count == batches > 0
    assert llm_rows["origin"] == llm_calls["origin"] >= 1
    session_age = time.time() - helpers.SESSION_STARTED
    assert 0 < uptime < session_age + 5, (uptime, session_age)

    path = screenshots / "dashboard.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000

    # The page's own polling of /metrics is not traffic: two polls later, the counts are unchanged.
    polls = int(browser.find_element(By.ID, "updated").get_attribute("data-refreshes"))
    wait_for(browser, lambda d: int(d.find_element(By.ID, "updated").get_attribute("data-refreshes")) >= polls + 2)
    again = browser.execute_script(DASHBOARD_SNAPSHOT)["rows"]["/predict"]
    assert float(again["total"]) == float(predict["total"])


def test_markup_in_a_metric_label_never_runs_on_the_dashboard(browser, llm_bento):
    """A 404's path became an endpoint label in /metrics, and the page put it into innerHTML.
    Unknown paths are now counted as "/<unmatched>", itself markup-like: the page shows
    it as text, and the path never reaches /metrics."""
    from selenium.webdriver.common.by import By

    payload = "/<img src=x onerror=\"document.title='pwned'\">"
    assert httpx.get(f"{llm_bento}{payload}").status_code == 404
    response = httpx.get(f"{llm_bento}/dashboard")
    assert "script-src 'sha256-" in response.headers["content-security-policy"]
    browser.get(f"{llm_bento}/dashboard")
    wait_for(browser, lambda d: d.find_element(By.ID, "updated").text != "never")
    assert "onerror" not in httpx.get(f"{llm_bento}/metrics").text
    shown = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#endpoints tr[data-endpoint]")]
    assert any(text.startswith("/<unmatched>") for text in shown), shown
    assert not browser.find_elements(By.CSS_SELECTOR, "#endpoints img, #endpoints unmatched")
    assert browser.title != "pwned"


def test_dashboard_charts_draw_and_move_with_traffic(browser, llm_bento, photo):
    """The four time-series charts start empty, then follow the traffic: a burst of
    predictions (and some rejected uploads) shows up as requests/s, p95, errors/s and
    batch size, and the request rate falls back once the traffic stops."""
    from selenium.webdriver.common.by import By

    def chart(name: str) -> tuple[int, float | None]:
        svg = browser.find_element(By.ID, f"chart-{name}")
        last = svg.get_attribute("data-last")
        return int(svg.get_attribute("data-points") or 0), (float(last) if last else None)

    browser.get(f"{llm_bento}/dashboard?every=1")
    wait_for(browser, lambda d: chart("rate")[0] >= 2)  # two quiet intervals drawn
    quiet_points, quiet_rate = chart("rate")
    assert quiet_rate == 0.0

    image = {"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert httpx.post(f"{llm_bento}/predict", files=image, timeout=60).status_code == 200
        assert httpx.post(f"{llm_bento}/predict", files={"image": ("x.jpg", b"nope", "image/jpeg")}).status_code == 400
    wait_for(browser, lambda d: (chart("rate")[1] or 0) == 0 and chart("rate")[0] > quiet_points + 4)

    svg = browser.find_element(By.ID, "chart-rate")
    polyline = svg.find_element(By.TAG_NAME, "polyline").get_attribute("points").split()
    peak = max(100 - float(point.split(",")[1]) for point in polyline)
    assert peak > 80, "the burst is the chart's highest point"
    for name in ("p95", "batch"):
        points, last = chart(name)
        assert points >= 1 and last and last > 0, name
    errors = browser.find_element(By.ID, "chart-errors").find_element(By.TAG_NAME, "polyline").get_attribute("points")
    assert max(100 - float(p.split(",")[1]) for p in errors.split()) > 50, "the rejected uploads show as errors/s"
