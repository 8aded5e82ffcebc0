"""The web viewer in real headless Chromium (Debian's chromium + chromedriver, via Selenium).

A uvicorn server is started on 127.0.0.1 (a free port) in this process and stopped at the
end. The test starts a run from the page, watches its progress live, waits for the SOS map
and its legend, clicks a rice pixel, checks the curves and seasons drawn for it against the
API, switches to cropping intensity, and saves a screenshot (``FUSECUBE_TEST_OUTPUT`` or the
pytest temp folder).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from fusecube.api import Settings, create_app  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
log = logging.getLogger(__name__)

CHROMIUM = os.environ.get("FUSECUBE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FUSECUBE_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1100")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(settings: Settings):
    """The API on 127.0.0.1:<free port> in a thread, stopped on exit."""
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        for _ in range(400):  # bounded wait for the socket
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield {"url": f"http://127.0.0.1:{port}", "app": app}
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def live_server(tmp_path):
    """The API without a token."""
    with serving(Settings(data_dir=tmp_path / "server", min_free_disk_mb=0)) as live:
        yield live


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a fresh profile; skipped when the browser is not installed."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _output_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FUSECUBE_TEST_OUTPUT") or tmp_path_factory.getbasetemp() / "output")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_viewer_run_map_pixel_curves(live_server, browser, tmp_path_factory):
    import httpx
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from fusecube.cube import read_cube

    base = live_server["url"]
    browser.get(base + "/")
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda d: "ok" in d.find_element(By.ID, "health").text)

    # start a run from the page and watch its row while it runs
    for field, value in (("new-width", "24"), ("new-height", "24")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#new-run button[type=submit]").click()
    # rows are redrawn every 2 s: read them in one script call, never keep an element
    run_id = wait.until(lambda d: d.execute_script(
        "const r = document.querySelector('tr.run'); return r ? r.dataset.id : null;"))
    row_js = ("const r = document.querySelector(`tr.run[data-id='${arguments[0]}']`);"
              "return r ? [r.dataset.state, r.querySelector('td.progress').textContent] : null;")
    states = []
    deadline = time.monotonic() + 300
    while True:  # bounded: the page polls /runs every 2 s
        found = browser.execute_script(row_js, run_id)
        state = found[0] if found else None
        if state and (not states or states[-1] != state):
            states.append(state)
        if state in ("done", "failed", "crashed"):
            break
        assert time.monotonic() < deadline, f"run stuck in {states}"
        time.sleep(0.3)
    assert states[-1] == "done", states
    assert "running" in states, f"live progress not shown: {states}"
    total = httpx.get(f"{base}/runs/{run_id}").json()["blocks_total"]
    assert total >= 1 and f"{total}/{total}" in browser.execute_script(row_js, run_id)[1]

    # the SOS map, with its legend
    wait.until(lambda d: d.find_element(By.ID, "map-img").get_attribute("data-loaded") == "true")
    image = browser.find_element(By.ID, "map-img")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 24
    assert Select(browser.find_element(By.ID, "layer")).first_selected_option.get_attribute(
        "value") == "sos"
    assert browser.find_elements(By.CSS_SELECTOR, "#legend .ramp")
    assert "Jan" in browser.find_element(By.ID, "legend").text

    # click a rice pixel that has a season in the shown slot
    out = Path(httpx.get(f"{base}/runs/{run_id}").json()["out"])
    result = read_cube(out / "result.zarr")
    slot = int(Select(browser.find_element(By.ID, "index")).first_selected_option.get_attribute("value"))
    sos = result["sos_doy"].values[slot]
    rows, cols = np.nonzero(np.isfinite(sos))
    assert rows.size, "the first season slot has no SOS anywhere"
    row, col = int(rows[rows.size // 2]), int(cols[rows.size // 2])
    width = image.size["width"]
    cell = width / 24
    ActionChains(browser).move_to_element_with_offset(
        image, int((col + 0.5) * cell - width / 2), int((row + 0.5) * cell - image.size["height"] / 2)
    ).click().perform()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves path.series-ndvi_smooth"))
    title = browser.find_element(By.ID, "pixel-title").text
    assert f"row {row}, col {col}" in title
    path = browser.find_element(By.CSS_SELECTOR, "#curves path.series-ndvi_smooth").get_attribute("d")
    assert path.count("L") >= 50  # one vertex per time step
    assert browser.find_elements(By.CSS_SELECTOR, "#curves circle.series-ndvi")
    assert browser.find_elements(By.CSS_SELECTOR, "#radar path.series-vh_db")
    assert browser.find_elements(By.CSS_SELECTOR, "#curves rect.season-band")
    expected = httpx.get(f"{base}/runs/{run_id}/pixel", params={"row": row, "col": col}).json()
    table = browser.find_element(By.CSS_SELECTOR, "#seasons tbody").text
    assert expected["seasons"] and all(s["sos"] in table for s in expected["seasons"])
    assert browser.find_element(By.ID, "marker").is_displayed()

    # products are linked
    links_js = "return [...document.querySelectorAll('#products a')].map((a) => a.textContent);"
    links = wait.until(lambda d: (lambda got: got if "report.html" in got else None)(
        d.execute_script(links_js)))
    assert "phenology.nc" in links and any(name.startswith("cogs/") for name in links)

    # cropping intensity with a class legend
    Select(browser.find_element(By.ID, "layer")).select_by_value("intensity")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .legend-class"))
    wait.until(lambda d: d.find_element(By.ID, "map-img").get_attribute("data-loaded") == "true")
    assert "intensity.png" in browser.find_element(By.ID, "map-img").get_attribute("src")
    Select(browser.find_element(By.ID, "layer")).select_by_value("sos")
    wait.until(lambda d: d.find_element(By.ID, "map-img").get_attribute("data-loaded") == "true")

    shot = _output_dir(tmp_path_factory) / "api_viewer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    log.warning("viewer screenshot: %s", shot)


def test_viewer_asks_for_the_token(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = Settings(data_dir=tmp_path / "server", token="tok-123", min_free_disk_mb=0,
                        max_run_pixels=32 * 32)
    with serving(settings) as live:
        browser.get(live["url"] + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "auth").is_displayed())
        assert "token" in browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "token").send_keys("tok-123")
        browser.find_element(By.ID, "token-save").click()
        wait.until(lambda d: not d.find_element(By.ID, "auth").is_displayed())
        # 48 x 48 is over this server's limit: the page shows the API's reason
        browser.find_element(By.CSS_SELECTOR, "#new-run button[type=submit]").click()
        wait.until(lambda d: "larger" in d.find_element(By.ID, "new-run-msg").text)
        assert live["app"].state.ledger.list_runs(5) == []
