"""The web viewer in real headless Chromium (Debian's chromium + chromedriver, via Selenium).

A uvicorn server is started on 127.0.0.1 (a free port) in this process and stopped at the
end. At 1400 px and 420 px wide the page shows a finished run on a Leaflet map (served from
the package), a click on a rice pixel draws its curves and seasons beside (or, narrow, under)
the map, checked against the API, and the page never scrolls sideways; screenshots go to
``FUSECUBE_TEST_OUTPUT`` or the pytest temp folder. Another test starts a run from the page
with a gap-fill choice, watches its progress live and checks that the new run's panel shows
nothing of the previous run.
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
         "--disable-dev-shm-usage")


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


def _needs_chromium() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")


@contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1000):
    """Headless Chromium with a fresh profile and a window ``width`` x ``height`` px."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium at 1400 px; skipped when the browser is not installed."""
    _needs_chromium()
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def _wait_done(base: str, run_id: str, limit_s: float = 300) -> dict:
    import httpx

    deadline = time.monotonic() + limit_s
    while True:  # bounded
        status = httpx.get(f"{base}/runs/{run_id}").json()
        if status["state"] in ("done", "failed", "crashed"):
            return status
        assert time.monotonic() < deadline, f"run {run_id} stuck in {status['state']}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def finished_server(tmp_path_factory):
    """A server holding one finished 24 x 24 px run (linear gap-fill), started through the API."""
    _needs_chromium()
    import httpx

    folder = tmp_path_factory.mktemp("viewer-server")
    with serving(Settings(data_dir=folder / "server", min_free_disk_mb=0)) as live:
        config = {"source": {"kind": "synthetic", "width": 24, "height": 24}, "gapfill": "linear"}
        run = httpx.post(f"{live['url']}/runs", json=config, timeout=60).json()
        status = _wait_done(live["url"], run["id"])
        assert status["state"] == "done", status
        yield {**live, "run": status}


LINKS_COUNT = "return document.querySelectorAll('#products a').length;"


def _no_sideways_scroll(driver) -> tuple[int, int]:
    return tuple(driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth];"))


def _click_pixel(driver, run_id: str, base: str, row: int, col: int) -> dict:
    """Click the map where pixel (row, col) lies (its lon/lat from the API)."""
    import httpx
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    where = httpx.get(f"{base}/runs/{run_id}/pixel", params={"row": row, "col": col}).json()
    box = driver.find_element(By.ID, "map")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    x, y = driver.execute_script(
        "const p = window.fusecubeViewer.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
        "return [p.x, p.y];", where["lat"], where["lon"])
    size = box.size
    ActionChains(driver).move_to_element_with_offset(
        box, int(x - size["width"] / 2), int(y - size["height"] / 2)).click().perform()
    return where


def _output_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FUSECUBE_TEST_OUTPUT") or tmp_path_factory.getbasetemp() / "output")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("width", [1400, 420])
def test_viewer_map_and_pixel_curves(finished_server, width, tmp_path, tmp_path_factory):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from fusecube.cube import read_cube

    base, run = finished_server["url"], finished_server["run"]
    with chromium(tmp_path / "profile", width=width) as browser:
        browser.get(base + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        wait.until(lambda d: "ok" in d.find_element(By.ID, "health").text)
        # the finished run is selected; its row says size, method and output folder
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-loaded") == "true")
        row_text = browser.execute_script(
            "return document.querySelector(`tr.run[data-id='${arguments[0]}']`).textContent;",
            run["id"])
        assert "24 × 24 px" in row_text and "linear" in row_text
        assert Path(run["out"]).name in row_text
        assert " – " in row_text  # the dates of the result
        # a Leaflet map: the overlay in the run's lon/lat bounds, zoom buttons, a scale bar
        assert browser.execute_script("return typeof L === 'object' && L.version") == "1.9.4"
        assert browser.find_elements(By.CSS_SELECTOR, "#map img.phenology-overlay")
        assert browser.find_elements(By.CSS_SELECTOR, "#map .leaflet-control-zoom-in")
        assert browser.find_element(By.CSS_SELECTOR, "#map .leaflet-control-scale").text
        assert Select(browser.find_element(By.ID, "layer")).first_selected_option.get_attribute(
            "value") == "sos"
        legend = browser.find_element(By.ID, "legend").text
        assert "Jan" in legend and "Dec" in legend  # month colours, one class per month
        assert len(browser.find_elements(By.CSS_SELECTOR, "#legend .legend-class")) == 12
        zoom = browser.execute_script("return window.fusecubeViewer.map.getZoom();")
        zoom_js = "return window.fusecubeViewer.map.getZoom();"
        browser.find_element(By.CSS_SELECTOR, "#map .leaflet-control-zoom-in").click()
        wait.until(lambda d: d.execute_script(zoom_js) > zoom)
        zoomed = browser.execute_script(zoom_js)
        time.sleep(0.5)  # let the zoom animation end
        browser.find_element(By.CSS_SELECTOR, "#map .leaflet-control-zoom-out").click()
        wait.until(lambda d: d.execute_script(zoom_js) < zoomed)
        # opacity slider
        browser.execute_script("const s = document.getElementById('opacity'); s.value = 40;"
                               "s.dispatchEvent(new Event('input'));")
        assert browser.execute_script(
            "return document.querySelector('#map img.phenology-overlay').style.opacity") == "0.4"

        # click a rice pixel that has a season in the shown slot
        result = read_cube(Path(run["out"]) / "result.zarr")
        slot = int(Select(browser.find_element(By.ID, "index")).first_selected_option
                   .get_attribute("value"))
        rows, cols = np.nonzero(np.isfinite(result["sos_doy"].values[slot]))
        assert rows.size, "the first season slot has no SOS anywhere"
        row, col = int(rows[rows.size // 2]), int(cols[rows.size // 2])
        _click_pixel(browser, run["id"], base, row, col)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves path.series-ndvi_smooth"))
        assert f"row {row}, col {col}" in browser.find_element(By.ID, "pixel-title").text
        path = browser.find_element(By.CSS_SELECTOR, "#curves path.series-ndvi_smooth").get_attribute("d")
        assert path.count("L") >= 50  # one vertex per time step
        assert browser.find_elements(By.CSS_SELECTOR, "#curves circle.series-ndvi")
        assert browser.find_elements(By.CSS_SELECTOR, "#radar path.series-vh_db")
        assert browser.find_elements(By.CSS_SELECTOR, "#curves rect.season-band")
        # the marker is drawn where the pixel is, inside the map and its vector layer
        inside = browser.execute_script(
            "const m = document.querySelector('.leaflet-overlay-pane .pixel-marker');"
            "if (!m) return null;"
            "const r = m.getBoundingClientRect(), s = m.ownerSVGElement.getBoundingClientRect(),"
            "  b = document.getElementById('map').getBoundingClientRect();"
            "const within = (a, o) => a.left >= o.left && a.right <= o.right && a.top >= o.top"
            "  && a.bottom <= o.bottom;"
            "return [r.width > 4, within(r, b), within(r, s)];")
        assert inside == [True, True, True], inside
        expected = httpx.get(f"{base}/runs/{run['id']}/pixel", params={"row": row, "col": col}).json()
        table = browser.find_element(By.CSS_SELECTOR, "#seasons tbody").text
        assert expected["seasons"] and all(s["sos"] in table for s in expected["seasons"])
        # dates carry their ± days, empty slots their reasons, filled values their σ band
        assert any(s.get("sos_pm_days") is not None for s in expected["seasons"]) and " ± " in table
        assert all(e["label"] in table for e in expected["empty_seasons"])
        sigma, source = expected["series"]["ndvi_sigma"], expected["series"]["ndvi_source"]
        assert any(k != "observed" and v is not None for k, v in zip(source, sigma, strict=True))
        band = browser.find_element(By.CSS_SELECTOR, "#curves path.series-sigma_upper")
        assert band.get_attribute("d").count("M") >= 1
        # the screened (all-zero) period is marked, never drawn as an observation at 0
        assert expected["screened"], "the synthetic scene plants an all-zero period"
        observed = browser.execute_script(
            "return document.querySelectorAll('#curves circle.series-ndvi').length;")
        assert observed == sum(v is not None for v in expected["series"]["ndvi"])
        assert browser.find_elements(By.CSS_SELECTOR, "#curves g.screened")

        # the pixel panel sits beside the map (wide) or under it (narrow), on screen
        map_box = browser.find_element(By.ID, "map").rect
        panel = browser.find_element(By.ID, "pixel").rect
        if width >= 1000:
            assert panel["x"] >= map_box["x"] + map_box["width"] - 1
            assert panel["y"] < map_box["y"] + map_box["height"]
        else:
            assert panel["y"] >= map_box["y"] + map_box["height"]
        scroll_width, inner = _no_sideways_scroll(browser)
        assert scroll_width <= inner, f"page scrolls sideways at {width} px: {scroll_width} > {inner}"

        # gates: the API's count; the planted fault labelled
        gates = browser.find_element(By.ID, "gates").text
        assert httpx.get(f"{base}/runs/{run['id']}").json()["gate_summary"]["text"] in gates
        assert "planted" in gates
        # products are linked
        links_js = "return [...document.querySelectorAll('#products a')].map((a) => a.textContent);"
        links = wait.until(lambda d: (lambda got: got if "report.html" in got else None)(
            d.execute_script(links_js)))
        assert "phenology.nc" in links and any(name.startswith("cogs/") for name in links)
        # cropping intensity with a class legend
        Select(browser.find_element(By.ID, "layer")).select_by_value("intensity")
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-layer") == "intensity")
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-loaded") == "true")
        assert "intensity.png" in browser.find_element(
            By.CSS_SELECTOR, "#map img.phenology-overlay").get_attribute("src")
        assert "seasons per year" in browser.find_element(By.ID, "legend").text

        shot = _output_dir(tmp_path_factory) / f"api_viewer_{width}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        log.warning("viewer screenshot: %s", shot)


def test_viewer_starts_a_run_with_a_gapfill_choice(finished_server, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, first = finished_server["url"], finished_server["run"]
    with chromium(tmp_path / "profile") as browser:
        browser.get(base + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-loaded") == "true")
        _click_pixel(browser, first["id"], base, 12, 12)
        wait.until(lambda d: d.find_element(By.ID, "pixel").is_displayed())
        wait.until(lambda d: d.execute_script(LINKS_COUNT) > 0)

        # start a run from the page, gap-fill chosen there
        for field, value in (("new-width", "16"), ("new-height", "16")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        Select(browser.find_element(By.ID, "new-gapfill")).select_by_value("whittaker")
        browser.find_element(By.CSS_SELECTOR, "#new-run button[type=submit]").click()
        run_id = wait.until(lambda d: (lambda t: t.split()[-1] if t.startswith("started") else None)(
            d.find_element(By.ID, "new-run-msg").text))
        assert run_id != first["id"]
        # the new run's panel shows nothing of the previous run
        assert browser.find_element(By.ID, "run-title").text == run_id
        assert not browser.find_element(By.ID, "pixel").is_displayed()
        assert not browser.find_elements(By.CSS_SELECTOR, "#map img.phenology-overlay")
        assert not browser.find_elements(By.CSS_SELECTOR, ".pixel-marker")
        assert browser.execute_script(LINKS_COUNT) == 0
        assert httpx.get(f"{base}/runs/{run_id}").json()["overview"]["requested"] == "whittaker"
        # its row shows live progress, then the maps of the new run
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
        assert f"{total}/{total}" in browser.execute_script(row_js, run_id)[1]
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-loaded") == "true")
        assert run_id in browser.find_element(By.CSS_SELECTOR, "#map img.phenology-overlay").get_attribute("src")


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
