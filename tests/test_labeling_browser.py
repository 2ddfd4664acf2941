"""Headless Chromium labels three questions (one by click, two by keyboard); the rows are in the store.

Needs the Debian ``chromium`` and ``chromium-driver`` packages and ``selenium`` (the dev extra); skipped
with the reason otherwise, except under CI (the ``CI`` environment variable set, as ``.ci/run`` does,
which installs them): there a missing browser fails the tests instead of skipping them. The screenshot
goes to ``$TEXTENV_ARTIFACTS`` (default ``runs/artifacts``).
"""

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from rewards.comparisons import ComparisonStore
from rewards.labeling.store import LabelingStore
from tests.test_labeling_app import XSS, fill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
except ImportError:  # the dev extra is missing
    webdriver = None


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if webdriver is None:
        return "needs selenium (pip install -e '.[dev]')"
    if not (CHROMIUM and DRIVER):
        return "needs headless Chromium: apt-get install chromium chromium-driver (.ci/run installs them)"
    return None


@pytest.fixture(autouse=True)
def browser_available():
    """Skip without a browser, but fail under CI, where .ci/run installed one: a CI run must not pass
    because its browser tests quietly skipped."""
    reason = missing_browser()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser tests cannot run: {reason}")
    if reason:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(path):
    """The app on ``path`` in a uvicorn thread; yields its URL."""
    import uvicorn

    from rewards.labeling.app import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(path), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(5)


@contextmanager
def chromium():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver, wait, url, token):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(url + "/")
    wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()


def question_shows(text):
    from selenium.webdriver.common.by import By

    return lambda d: (
        d.find_element(By.ID, "query").text == text
        and not d.find_element(By.ID, "work").get_attribute("hidden")
    )


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, n=5)
    token = LabelingStore(path).add_labeler("alice")
    with serving(path) as url:
        yield url, token, path


def test_label_three_questions_in_chromium(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, token, path = server
    with chromium() as driver:
        wait = WebDriverWait(driver, 20)
        log_in(driver, wait, url, token)
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
    with ComparisonStore(path) as store:
        labelled = store.labelled()
    assert [(c.query_text, c.label["best"], c.labeler) for c in labelled] == [
        ("context 0", 2, "alice"),
        ("context 1", 1, "alice"),
        ("context 2", 3, "alice"),
    ]
    assert (artifacts / "labeling_page.png").stat().st_size > 1000


def test_a_person_judges_a_human_evaluation_in_chromium(tmp_path):
    """`evaluate --labeler human`'s pairs in the real page: two samples, keys 1-2, win rate read back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from agents.human_eval import human_results, post_human_evaluation

    path = tmp_path / "labels.db"
    texts = {
        "zero-shot": ["plain answer 0", "plain answer 1"],
        "policy": ["better answer 0", "better answer 1"],
    }
    outputs = {
        name: [
            {"query": f"prompt {i}", "source": f"prompt {i}", "reference": None, "response": t}
            for i, t in enumerate(ts)
        ]
        for name, ts in texts.items()
    }
    post_human_evaluation(path, "browser", "BookSentiment-v0", outputs, votes=1, seed=3)
    token = LabelingStore(path).add_labeler("alice")
    with serving(path) as url, chromium() as driver:
        wait = WebDriverWait(driver, 20)
        log_in(driver, wait, url, token)
        for i in range(2):
            wait.until(question_shows(f"prompt {i}"))
            samples = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "button.sample")]
            assert sorted(samples) == [f"better answer {i}", f"plain answer {i}"]
            assert "press 1-2" in driver.find_element(By.ID, "ask").text
            driver.find_element(By.TAG_NAME, "body").send_keys("3")  # no third sample: ignored
            driver.find_element(By.TAG_NAME, "body").send_keys(str(samples.index(f"better answer {i}") + 1))
        wait.until(lambda d: not d.find_element(By.ID, "done").get_attribute("hidden"))
    policy = human_results(path, "browser")["systems"]["policy"]
    assert (policy["complete"], policy["win_rate"]) == (2, 1.0)


def test_an_ended_session_shows_the_login_form_again_in_chromium(server):
    """Logout elsewhere, expiry or a revoked token: the next click answers 401, the page asks for the
    token again (saying why) and, logged in again, goes on where it was; nothing was stored twice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, token, path = server
    with chromium() as driver:
        wait = WebDriverWait(driver, 20)
        log_in(driver, wait, url, token)
        wait.until(question_shows("context 0"))
        driver.find_elements(By.CSS_SELECTOR, "button.sample")[1].click()
        wait.until(question_shows("context 1"))
        with LabelingStore(path) as store:
            assert store.end_sessions("alice") == 1  # the page's session, ended on the server
        driver.find_elements(By.CSS_SELECTOR, "button.sample")[0].click()
        error = wait.until(ec.visibility_of_element_located((By.ID, "login-error")))
        assert "log in again" in error.text and "session expired or was ended" in error.text
        assert driver.find_element(By.ID, "work").get_attribute("hidden")
        log_in(driver, wait, url, token)
        wait.until(question_shows("context 1"))  # the refused answer was not stored
        driver.find_elements(By.CSS_SELECTOR, "button.sample")[3].click()
        wait.until(question_shows("context 2"))
    with ComparisonStore(path) as store:
        labelled = store.labelled()
    assert [(c.query_text, c.label["best"]) for c in labelled] == [("context 0", 1), ("context 1", 3)]


def test_admin_dashboard_in_chromium_by_keyboard_and_on_a_phone(tmp_path):
    """The dashboard of a campaign with a finished online run's records: login by keyboard alone, who
    is logged in, every chart drawn as SVG, the flagged question readable (literally: its script never
    runs), no sideways scrolling on a phone-sized window, and a clear login prompt once the session is
    revoked. Screenshots (desktop and phone) go to $TEXTENV_ARTIFACTS (default runs/artifacts)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_labeling_dashboard import campaign

    path = tmp_path / "labels.db"
    tokens = campaign(path)
    artifacts = Path(os.environ.get("TEXTENV_ARTIFACTS", "runs/artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with serving(path) as url, chromium() as driver:
        driver.set_window_size(1200, 2400)
        wait = WebDriverWait(driver, 20)
        driver.get(url + "/admin")
        reason = wait.until(ec.visibility_of_element_located((By.ID, "login-reason")))
        assert "not logged in" in reason.text and driver.find_element(By.ID, "main").get_attribute("hidden")
        # keyboard only: the token field has the focus; type the token and press Enter
        assert driver.switch_to.active_element.get_attribute("id") == "token"
        driver.switch_to.active_element.send_keys(tokens["boss"], Keys.ENTER)
        wait.until(lambda d: not d.find_element(By.ID, "main").get_attribute("hidden"))
        assert driver.find_element(By.ID, "who").text == "Logged in as boss (admin)"
        for section in ("hourly", "agreement", "skips", "tasks", "online"):
            assert driver.find_elements(By.CSS_SELECTOR, f"#{section} svg.svg"), section
        assert len(driver.find_elements(By.CSS_SELECTOR, "#online svg.svg")) == 2  # l(n) and accuracy
        assert len(driver.find_elements(By.CSS_SELECTOR, "#agreement svg.svg line.tick")) == 3  # chance
        assert "q6" in driver.find_element(By.ID, "flags").text
        # open the flagged question by keyboard: focus its summary, press Enter; the text is literal
        summary = driver.find_element(By.CSS_SELECTOR, "#flags summary")
        driver.execute_script("arguments[0].focus()", summary)
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        first = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#flags .flag-samples li")))
        assert first.text == XSS and driver.execute_script("return window.__xss === undefined")
        driver.save_screenshot(str(artifacts / "labeling_admin.png"))
        # a phone-sized window: everything fits the width (no sideways scrolling)
        driver.set_window_size(390, 844)
        time.sleep(0.3)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, overflow
        driver.save_screenshot(str(artifacts / "labeling_admin_phone.png"))
        # the session is revoked on the server: a refresh (key r) shows the login prompt, saying why
        with LabelingStore(path) as store:
            store.revoke_labeler("boss")
        driver.find_element(By.TAG_NAME, "body").send_keys("r")
        reason = wait.until(ec.visibility_of_element_located((By.ID, "login-reason")))
        assert "session ended" in reason.text and "log in again" in reason.text
        assert driver.find_element(By.ID, "who").text == "Not logged in"
        assert driver.find_element(By.ID, "main").get_attribute("hidden")
    for name in ("labeling_admin.png", "labeling_admin_phone.png"):
        assert (artifacts / name).stat().st_size > 1000
