"""The inference page in a real browser: Debian's chromium, headless, driven by Selenium through
chromedriver, against the real ``semseg serve --model`` (gunicorn on 127.0.0.1) serving a directory
of two models whose ``classes.json`` name their classes differently (the default one as the sample
task does). What the page shows and downloads must be what ``/invocations`` answers an API client,
for the model picked, and for a second model shown beside it.

Without chromium and chromedriver (``apt-get install chromium chromium-driver``) the test is
skipped, except under CI=true, where it fails: CI installs them (.ci/run).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from harness.serving_helpers import encoded, model_repository_server, sample_image
from PIL import Image

from semseg import classes
from semseg.sample_data import CLASSES as NAMED

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NAMES = ("background", "disc", "rectangle", "triangle")
RENAMED = classes.ClassTable(("ground", "round", "square", "pointy"), classes.voc_colors(4))
WAIT_S = 120  # a loaded 2-core machine: the first prediction and a download can take a while


@pytest.fixture(scope="module")
def browser(named_server, tmp_path_factory):
    """Quits before the server stops: its open keep-alive connections would hold the graceful stop."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but chromium or chromedriver is missing: apt-get install chromium chromium-driver")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def named_server(tmp_path_factory):
    """``semseg serve --model MODELS`` on the test fcn model as "v1" (the default, the sample task's
    names) and "v2" (other names, other colours)."""
    with model_repository_server(tmp_path_factory, {"v1": NAMED, "v2": RENAMED}) as server:
        yield server


def state_of(driver) -> str:
    return driver.execute_script("return document.body.dataset.state || ''")


def run_on(driver, server, picture: Path) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server.url + "/")
    driver.find_element(By.ID, "file").send_keys(str(picture))
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: state_of(d) in ("done", "failed"))
    return state_of(driver)


def test_the_page_segments_a_jpeg_as_invocations_does(browser, named_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    body = encoded(sample_image(200, 150, seed=7), "JPEG", quality=92)
    picture = tmp_path / "street.jpg"
    picture.write_bytes(body)
    answer = named_server.invoke(body)  # what an API client gets
    assert answer.status_code == 200, answer.text
    api_mask = Image.open(io.BytesIO(answer.content))
    ids = np.array(api_mask)

    assert run_on(browser, named_server, picture) == "done", browser.find_element(By.ID, "status").text
    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed()
    assert (int(overlay.get_attribute("width")), int(overlay.get_attribute("height"))) == (200, 150)

    legend = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert [item.find_element(By.CLASS_NAME, "name").text for item in legend] == list(NAMES)
    expected = np.bincount(ids.ravel(), minlength=len(NAMES)) / ids.size
    shown = [float(item.get_attribute("data-share")) for item in legend]
    assert shown == pytest.approx(expected.tolist(), abs=1e-6)
    assert sum(share > 0 for share in shown) >= 1

    slider = browser.find_element(By.ID, "opacity")
    slider.send_keys(Keys.HOME)
    assert float(overlay.value_of_css_property("opacity")) == 0.0
    slider.send_keys(Keys.END)
    assert float(overlay.value_of_css_property("opacity")) == 1.0

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "download").click()
    saved = downloads / "mask.png"
    deadline = time.monotonic() + WAIT_S
    while not saved.is_file() or list(downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"no download in {WAIT_S} s: {list(downloads.iterdir())}"
        time.sleep(0.2)
    with Image.open(saved) as page_mask:
        assert page_mask.mode == "P" and page_mask.getpalette() == api_mask.getpalette()
        np.testing.assert_array_equal(np.array(page_mask), ids)  # pixel for pixel


def test_the_page_shows_the_servers_sentence_for_a_file_that_is_no_image(browser, named_server, tmp_path):
    from selenium.webdriver.common.by import By

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    expected = named_server.invoke(notes.read_bytes(), content_type="text/plain").json()["error"]
    assert run_on(browser, named_server, notes) == "failed"
    assert browser.find_element(By.ID, "status").text == expected
    assert named_server.invoke(encoded(sample_image(40, 30))).status_code == 200  # the worker is fine


def legend_of(driver, panel: str) -> tuple[list[str], list[float]]:
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, f"#{panel} li")
    return [item.find_element(By.CLASS_NAME, "name").text for item in items], [
        float(item.get_attribute("data-share")) for item in items
    ]


def test_the_page_picks_a_model_and_shows_another_beside_it(browser, named_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    body = encoded(sample_image(120, 90, seed=11), "JPEG", quality=92)
    picture = tmp_path / "two.jpg"
    picture.write_bytes(body)
    shares = {}
    for model in ("v1", "v2"):
        answer = named_server.invoke(body, model=model)
        assert answer.status_code == 200 and answer.headers["X-Semseg-Model"] == model
        ids = np.array(Image.open(io.BytesIO(answer.content)))
        shares[model] = (np.bincount(ids.ravel(), minlength=len(NAMES)) / ids.size).tolist()

    browser.get(named_server.url + "/")
    picker = browser.find_element(By.ID, "model")
    WebDriverWait(browser, WAIT_S).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
    assert picker.is_displayed() and Select(picker).first_selected_option.get_attribute("value") == "v1"
    Select(picker).select_by_value("v2")
    Select(browser.find_element(By.ID, "compare")).select_by_value("v1")
    browser.find_element(By.ID, "file").send_keys(str(picture))
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: state_of(d) in ("done", "failed"))
    assert state_of(browser) == "done", browser.find_element(By.ID, "status").text

    assert browser.find_element(By.ID, "title").text == "v2"
    assert browser.find_element(By.ID, "title-compare").text == "v1"
    assert browser.find_element(By.ID, "overlay-compare").is_displayed()
    names, shown = legend_of(browser, "legend")
    assert names == list(RENAMED.names) and shown == pytest.approx(shares["v2"], abs=1e-6)
    names, shown = legend_of(browser, "legend-compare")
    assert names == list(NAMES) and shown == pytest.approx(shares["v1"], abs=1e-6)
