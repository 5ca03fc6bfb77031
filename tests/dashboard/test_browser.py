"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver, against ``eusdx serve`` (embedded worker, real bundle) that received phantom studies
over DICOM from DCMTK storescu and answered a DCMTK storescp "PACS".

Screenshots are kept under ``test-artifacts/dashboard/`` (ignored by git; CI uploads the folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit.auth import hash_token
from tests.conftest import bundle_trust_env, free_port
from tests.dicom_node.peers import wait_listening
from tests.worker.conftest import SECRET, cohort_studies
from tests.worker.test_end_to_end import _wait, pacs, send_study  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("EUSDX_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
EUSDX = str(Path(sys.executable).with_name("eusdx"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKENS = {"worklist": "browser-wl-token", "qa": "browser-qa-token", "admin": "browser-admin-token"}


@pytest.fixture
def served(tmp_var: Path, tiny_bundle: Path, phantom_cohort: Path,
           pacs: tuple[str, Path]) -> Iterator[dict[str, Any]]:  # noqa: F811
    """``eusdx serve`` that has analysed and exported every phantom study of the cohort."""
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update({
        "EUSDX_SPOOL_DIR": str(tmp_var / "spool"), "EUSDX_QUEUE_DIR": str(tmp_var / "queue"),
        "EUSDX_OUTBOX_DIR": str(tmp_var / "outbox"),
        "EUSDX_DATABASE_URL": f"sqlite:///{tmp_var / 'audit.db'}",
        "EUSDX_AUDIT_HMAC_SECRET": SECRET, "EUSDX_BUNDLE": str(tiny_bundle), "EUSDX_DEVICE": "cpu",
        "EUSDX_DICOM_HOST": "127.0.0.1", "EUSDX_DICOM_PORT": str(dicom_port),
        "EUSDX_HTTP_HOST": "127.0.0.1", "EUSDX_HTTP_PORT": str(http_port),
        "EUSDX_STUDY_QUIET_SECONDS": "1", "EUSDX_EXPORT_DESTINATIONS": pacs[0],
        "EUSDX_EXPORT_BACKOFF_SECONDS": "1", **bundle_trust_env(tiny_bundle),
        "EUSDX_API_TOKENS": ",".join(f"{n}:{r}:{hash_token(t)}" for r, t, n in (
            ("worklist", TOKENS["worklist"], "ris"), ("qa", TOKENS["qa"], "dr-qa"),
            ("admin", TOKENS["admin"], "root"))),
    })
    log_path = tmp_var / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([EUSDX, "serve"], env=env, stdout=log_file, stderr=log_file,
                                cwd=tmp_var)
    try:
        wait_listening(dicom_port, timeout=120)
        wait_listening(http_port, timeout=60)
        studies = cohort_studies(phantom_cohort)
        for uid in studies:
            send_study(dicom_port, "EUSDX", phantom_cohort / "studies" / uid)
        engine = sa.create_engine(f"sqlite:///{tmp_var / 'audit.db'}")

        def all_sent() -> bool:
            # sent at the PACS, and the study itself settled in its terminal state (the export runner
            # writes "exported" just after the last destination confirmed)
            with engine.connect() as conn:
                sent = {u for (u,) in conn.execute(sa.text(
                    "SELECT study_uid FROM study_exports WHERE status = 'sent'"))}
                exported = {u for (u,) in conn.execute(sa.text(
                    "SELECT study_uid FROM studies WHERE state = 'exported'"))}
            return set(studies) <= sent and set(studies) <= exported

        try:
            _wait(all_sent, 600, "every phantom study's SR at the PACS", proc)
            with engine.connect() as conn:
                # reported, or exported where the audit projects the export onto the study
                [(state,)] = conn.execute(sa.text("SELECT DISTINCT state FROM studies")).all()
        except (AssertionError, ValueError):
            raise AssertionError(log_path.read_text(errors="replace")[-4000:]) from None
        finally:
            engine.dispose()
        yield {"url": f"http://127.0.0.1:{http_port}", "studies": studies, "state": state,
               "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("chromium and chromium-driver are required (scripts/install-system-deps.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.names: list[str] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        file = f"{len(self.names) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(ARTIFACTS / file))
        self.names.append(file)


def _login(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    # The click returns before the redirect lands; a get() issued now could be overtaken by it.
    _wait(lambda: "/ui/login" not in driver.current_url, 30, "the login redirect")


def _until(driver: Any, check: Any, what: str, timeout: float = 30) -> Any:
    """After a click that submits a form: wait until ``check(driver)`` holds on the page that the submit
    loads. The old page stays readable until the new one replaces it (same ids), and an element found on it
    goes stale under the reader, so both are retried until the deadline."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def attempt() -> Any:
        try:
            return check(driver)
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    return _wait(attempt, timeout, what)


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def _paired(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#performance tr.total td.paired")
    return rows[0].text if rows else ""


@pytest.mark.timeout(1800)  # trains the session's tiny bundle when it is the first to ask
def test_dashboard_in_a_real_browser(served: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, driver = served["url"], browser
    shot = Shots(driver)

    # Unauthenticated: the login page, nothing else.
    driver.get(f"{url}/ui/studies")
    _wait(lambda: "/ui/login" in driver.current_url, 20, "the redirect of an anonymous visit to the login page")
    shot("login")

    _login(driver, url, TOKENS["qa"])
    assert driver.current_url.endswith("/ui/studies")
    links = driver.find_elements(By.CSS_SELECTOR, "a.study-link")
    assert len(links) == len(served["studies"])
    shot("studies")

    # Filter: the state every study reached, then by result, then one that matches nothing.
    Select(driver.find_element(By.ID, "f-state")).select_by_value(served["state"])
    driver.find_element(By.ID, "apply").click()
    _until(driver, lambda d: f"state={served['state']}" in d.current_url, "the filtered list")
    assert len(driver.find_elements(By.CSS_SELECTOR, "a.study-link")) == len(served["studies"])
    results = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#studies tbody td:nth-child(4)")]
    Select(driver.find_element(By.ID, "f-result")).select_by_value("GIST")
    driver.find_element(By.ID, "apply").click()
    _until(driver, lambda d: "result=GIST" in d.current_url, "the list filtered by result")
    assert len(driver.find_elements(By.CSS_SELECTOR, "a.study-link")) == results.count("GIST")
    shot("studies-filtered")
    Select(driver.find_element(By.ID, "f-result")).select_by_value("")
    Select(driver.find_element(By.ID, "f-state")).select_by_value("failed")
    driver.find_element(By.ID, "apply").click()
    _until(driver, lambda d: d.find_element(By.ID, "no-studies").is_displayed(), "the empty list")
    shot("studies-filtered-empty")

    driver.get(f"{url}/ui/performance")
    before = _paired(driver)
    assert before.startswith("0 ")
    shot("performance-before")

    # Open a study: timeline, result table, the key image with the SR's ROI, the SR link.
    driver.get(f"{url}/ui/studies")
    driver.find_elements(By.CSS_SELECTOR, "a.study-link")[0].click()
    study_uid = driver.find_element(By.ID, "study-uid").text
    assert served["state"] in driver.find_element(By.ID, "study-state").text
    assert driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert driver.find_elements(By.CSS_SELECTOR, "#results tr.lesion")
    preview = driver.find_element(By.ID, "preview")
    _wait(lambda: driver.execute_script("return arguments[0].complete", preview), 60, "preview")
    width = driver.execute_script("return arguments[0].naturalWidth", preview)
    assert width > 0, "the key-image preview did not load"
    href = driver.find_element(By.ID, "sr-download").get_attribute("href")
    assert re.search(r"/sr/[0-9.]+\.dcm$", href)
    shot("study")

    # Feedback: a verdict, then the pathology result.
    driver.find_element(By.ID, "verdict-correct").click()
    Select(driver.find_element(By.ID, "corrected-label")).select_by_value("leiomyoma")
    driver.find_element(By.ID, "verdict-comment").send_keys("margin looks smooth")
    driver.find_element(By.ID, "save-verdict").click()
    _until(driver, lambda d: "correct -> leiomyoma" in _text(d, "current-verdict"), "the saved verdict")
    Select(driver.find_element(By.ID, "truth")).select_by_value("leiomyoma")
    driver.find_element(By.ID, "source").send_keys("surgery")
    driver.find_element(By.ID, "save-pathology").click()
    _until(driver, lambda d: "leiomyoma (surgery" in _text(d, "current-pathology"), "the saved pathology")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#feedback-history tbody tr")) == 2
    shot("study-feedback")

    driver.get(f"{url}/ui/performance")
    after = _paired(driver)
    assert after.startswith("1 ") and after != before
    assert "n=1" in driver.find_element(By.CSS_SELECTOR, "#performance tr.total td.agreement").text
    shot("performance-after")

    driver.get(f"{url}/ui/failures")
    shot("failures")
    driver.get(f"{url}/ui/operations")
    driver.find_element(By.ID, "run-verify").click()
    _until(driver, lambda d: "intact" in _text(d, "verify-status"), "the audit verification result")
    assert "eusdx_outbox_depth" in driver.find_element(By.ID, "metrics").text
    shot("operations")

    # The worklist role cannot reach any QA page.
    _login(driver, url, TOKENS["worklist"])
    for page in ("studies", f"studies/{study_uid}", "performance", "failures", "operations"):
        driver.get(f"{url}/ui/{page}")
        assert driver.find_element(By.ID, "error-title").text == "Not allowed", page
    shot("worklist-role-refused")
    print("screenshots:", ", ".join(shot.names))
    assert len(shot.names) == 11
