"""Headless Chromium labels three questions (one by click, two by keyboard); the rows are in the store.

Needs the Debian ``chromium`` and ``chromium-driver`` packages and ``selenium`` (the dev extra); skipped
with the reason otherwise. The screenshot goes to ``$TEXTENV_ARTIFACTS`` (default ``runs/artifacts``).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from rewards.comparisons import ComparisonStore  # noqa: E402
from rewards.labeling.store import LabelingStore  # noqa: E402
from tests.test_labeling_app import XSS, fill  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs headless Chromium: apt-get install chromium chromium-driver"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from rewards.labeling.app import create_app

    path = tmp_path / "labels.db"
    fill(path, n=5)
    token = LabelingStore(path).add_labeler("alice")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(path), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", token, path
    srv.should_exit = True
    thread.join(5)


def test_label_three_questions_in_chromium(server):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, token, path = server
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    wait = WebDriverWait(driver, 20)
    try:
        driver.get(url + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()

        def question_shows(text):
            return lambda d: (
                d.find_element(By.ID, "query").text == text
                and not d.find_element(By.ID, "work").get_attribute("hidden")
            )

        wait.until(question_shows("context 0"))
        # model text is shown literally, and the script in it never ran
        first = driver.find_elements(By.CSS_SELECTOR, "button.sample")[0]
        assert first.text == XSS
        assert driver.execute_script("return window.__xss === undefined")
        driver.find_elements(By.CSS_SELECTOR, "button.sample")[2].click()  # by click: sample 3
        wait.until(question_shows("context 1"))
        driver.find_element(By.TAG_NAME, "body").send_keys("2")  # by keyboard: sample 2
        wait.until(question_shows("context 2"))
        driver.find_element(By.TAG_NAME, "body").send_keys("4")
        wait.until(question_shows("context 3"))
        artifacts = Path(os.environ.get("TEXTENV_ARTIFACTS", "runs/artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(artifacts / "labeling_page.png"))
    finally:
        driver.quit()
    with ComparisonStore(path) as store:
        labelled = store.labelled()
    assert [(c.query_text, c.label["best"], c.labeler) for c in labelled] == [
        ("context 0", 2, "alice"),
        ("context 1", 1, "alice"),
        ("context 2", 3, "alice"),
    ]
    assert (artifacts / "labeling_page.png").stat().st_size > 1000
