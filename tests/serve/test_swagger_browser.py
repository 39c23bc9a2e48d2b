"""Swagger UI in a real browser against ``onnxfn serve``: one document for every model (a section a
model, filtered by name), Authorize with the API key, then "Try it out" on POST
/v2/models/digits/infer with a real scikit-learn digits image.

Headless Debian Chromium driven by Selenium through Debian's chromedriver (never Selenium Manager,
which would download a browser). The page is public (cdk.json: ``docs: public``); the inference
request it sends still needs the key, so a 200 shows that Swagger UI sent it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30
INFER_PATH = "/v2/models/digits/infer"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,2000",
)
# Swagger UI's text area is a React-controlled component: set the value as the browser would and
# fire `input`, so React's onChange sees it (assigning .value alone is undone on the next render).
SET_REACT_VALUE = """
const [element, value] = arguments;
const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(element), "value").set;
setter.call(element, value);
element.dispatchEvent(new Event("input", {bubbles: true}));
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            pytest.fail(
                f"{path} is missing ({package}); the Swagger UI test needs a local browser: "
                "run `apt-get install chromium chromium-driver`"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _digit() -> tuple[list[float], int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [float(x) for x in digits.data[0]], int(digits.target[0])


def test_swagger_ui_authorizes_and_runs_digits_inference(browser, served_app, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # Swagger UI re-renders as state changes: a found element may go stale, so conditions look again
    wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    pixels, label = _digit()
    body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]})

    # docs: public — the page and the document need no key (the inference route does: 403 without it)
    assert served_app.client.request("GET", "/swagger?format=json", api_key=False).status == 200
    assert served_app.client.request("POST", "/v2/models/digits/infer", body, api_key=False).status == 403

    try:
        driver.get(f"{served_app.url}/swagger")
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title")))

        # Authorize: the apiKey scheme of the document, sent as x-api-key
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".scheme-container button.authorize"))).click()
        dialog = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))
        assert "x-api-key" in dialog.text
        dialog.find_element(By.CSS_SELECTOR, ".auth-container input").send_keys("test-key")
        dialog.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".dialog-ux button.btn-done"))).click()
        wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".scheme-container button.authorize.locked")))

        # one section a model; the filter box keeps the chosen model's section only
        sections = wait.until(
            lambda _: (
                {e.get_attribute("data-tag") for e in driver.find_elements(By.CSS_SELECTOR, "h3.opblock-tag")}
                >= {"digits", "minilm"}
                and {e.get_attribute("data-tag") for e in driver.find_elements(By.CSS_SELECTOR, "h3.opblock-tag")}
            )
        )
        assert {"digits", "minilm", "server"} <= sections, sections
        driver.find_element(By.CSS_SELECTOR, "input.operation-filter-input").send_keys("digits")
        wait.until(lambda _: not driver.find_elements(By.CSS_SELECTOR, "h3.opblock-tag[data-tag='minilm']"))

        # POST /v2/models/digits/infer: expand, Try it out, the digit as the body
        operation = wait.until(
            ec.presence_of_element_located(
                (By.XPATH, f"//div[contains(@class,'opblock-post')][.//*[@data-path='{INFER_PATH}']]")
            )
        )
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, "button.try-out__btn").is_displayed())
        operation.find_element(By.CSS_SELECTOR, "button.try-out__btn").click()
        text_area = wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text"))
        # the example the document gives for digits: its input, shape and datatype from the manifest
        example = json.loads(text_area.get_attribute("value") or "null")
        assert example["inputs"][0] | {"data": None} == {
            "name": "pixels",
            "shape": [1, 64],
            "datatype": "FP32",
            "data": None,
        }
        driver.execute_script(SET_REACT_VALUE, text_area, body)
        wait.until(lambda _: json.loads(text_area.get_attribute("value") or "null") == json.loads(body))

        operation.find_element(By.CSS_SELECTOR, "button.execute").click()
        response = ".live-responses-table .response"
        status = wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, f"{response} .response-col_status").text)
        shown = operation.find_element(By.CSS_SELECTOR, f"{response} .response-col_description .highlight-code pre")
        shown_text = shown.text
        curl = operation.find_element(By.CSS_SELECTOR, ".curl-command").text
    except TimeoutException as exc:
        (tmp_path / "swagger.html").write_text(driver.page_source)
        driver.save_screenshot(str(tmp_path / "swagger.png"))
        raise AssertionError(f"Swagger UI did not get there in {WAIT_S} s; page and screenshot in {tmp_path}") from exc

    assert status.strip() == "200", f"{status}\n{shown_text}"
    assert "x-api-key: test-key" in curl  # Swagger UI sent the key from Authorize
    assert "/prod/v2/models/digits/infer" in curl  # to the document's server: the stage
    reply = json.loads(shown_text)
    outputs = {output["name"]: output["data"] for output in reply["outputs"]}
    assert outputs["label"] == [label] == [0]
