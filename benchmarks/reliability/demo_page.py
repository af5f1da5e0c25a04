"""Drive the demo page (served at /) in a real headless Chromium, as a visitor and an admin would:
search, click a result and see the ranking change, tick a facet and see only matching products, add a
product and find it. Saves a screenshot.

The browser is the operating system's (Debian: `apt-get install chromium chromium-driver`), driven
by Selenium through /usr/bin/chromedriver: nothing is downloaded at run time. tests/test_demo.py
runs it in CI; against a running server (`firstlight serve ... --admin_token_file T`):

    python benchmarks/reliability/demo_page.py --url http://127.0.0.1:8000 --token-file T --query "cordless drill" \
        --screenshot docs/images/demo.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser():
    """Headless Chromium from the OS packages, or a clear error saying how to install it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = next((b for b in CHROMIUM if Path(b).exists()), None) or shutil.which("chromium")
    if not binary or not Path(CHROMEDRIVER).exists():
        raise RuntimeError("Chromium and its driver are not installed: run `apt-get install chromium "
                           "chromium-driver` (Debian/Ubuntu); .ci/run does")
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1300"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(predicate, timeout_s: float = 60, what: str = "the page"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen in {timeout_s}s")


def drive(url: str, token: str, query: str, new_item: dict, screenshot: Path | None = None,
          constraint_query: str | None = None) -> dict:
    """Run the visitor's and the admin's steps; what the page showed at each. ``constraint_query``: a
    text with a constraint in it, searched last: its chips, then the chips once the first is removed."""
    from selenium.webdriver.common.by import By

    driver = browser()
    seen = {}
    try:
        driver.get(url + "/")
        find = driver.find_element

        def results_after(previous: str | None) -> list[dict]:
            """The list once a search newer than ``previous`` has rendered it."""
            _wait(lambda: find(By.ID, "status").get_attribute("data-done") not in (None, previous),
                  what="the results")
            return [{"id": li.get_attribute("data-id"), "title": li.find_element(By.CLASS_NAME, "title").text,
                     "why": li.find_element(By.CLASS_NAME, "why").text,
                     "attributes": json.loads(li.get_attribute("data-attributes") or "{}")}
                    for li in driver.find_elements(By.CSS_SELECTOR, "#results li")]

        def done() -> str | None:
            return find(By.ID, "status").get_attribute("data-done")

        find(By.ID, "q").send_keys(query)
        find(By.ID, "search").click()
        seen["cold"] = results_after(None)
        before = done()
        driver.find_elements(By.CSS_SELECTOR, "#results li .title")[0].click()  # the visitor clicks the first
        _wait(lambda: find(By.ID, "session").get_attribute("data-clicks") == "1", what="the click")
        seen["warm"] = results_after(before)
        seen["session"] = find(By.ID, "session").text
        boxes = driver.find_elements(By.CSS_SELECTOR, "#facets fieldset input[type=checkbox]")
        if boxes:  # the sidebar: tick the first value of the first keyword facet
            field = boxes[0].find_element(By.XPATH, "./ancestor::fieldset").get_attribute("data-field")
            seen["facet"] = {"field": field, "value": boxes[0].get_attribute("data-value")}
            before = done()
            boxes[0].click()
            seen["faceted"] = results_after(before)
            seen["faceted_status"] = find(By.ID, "status").text
        if screenshot:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        if boxes:  # untick it again for the admin's steps
            before = done()
            driver.find_elements(By.CSS_SELECTOR, "#facets fieldset input[type=checkbox]:checked")[0].click()
            results_after(before)
        find(By.CSS_SELECTOR, "#admin summary").click()
        find(By.ID, "token").send_keys(token)
        find(By.ID, "new-id").send_keys(new_item["id"])
        find(By.ID, "new-title").send_keys(new_item["title"])
        find(By.ID, "add").click()
        seen["admin"] = _wait(lambda: find(By.ID, "admin-status").text, what="the admin answer")
        before = done()
        find(By.ID, "reset").click()  # a new visitor: the page searches again, without clicks
        results_after(before)
        box = find(By.ID, "q")
        box.clear()
        box.send_keys(new_item["title"])
        before = done()
        find(By.ID, "search").click()
        seen["new"] = results_after(before)
        if constraint_query:
            def chips() -> list[dict]:
                return [{"field": c.get_attribute("data-field"), "status": c.get_attribute("data-status"),
                         "text": c.find_element(By.CLASS_NAME, "label").text}
                        for c in driver.find_elements(By.CSS_SELECTOR, "#constraints .chip")]
            box.clear()
            box.send_keys(constraint_query)
            before = done()
            find(By.ID, "search").click()
            seen["constrained"] = results_after(before)
            seen["chips"] = chips()
            if seen["chips"]:
                before = done()
                find(By.CSS_SELECTOR, "#constraints .chip button").click()
                seen["unconstrained"] = results_after(before)
                seen["chips_after"] = chips()
                seen["query_after"] = find(By.ID, "q").get_attribute("value")
    finally:
        driver.quit()
    return seen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--query", default="I need a light jacket for a spring outing")
    parser.add_argument("--screenshot", default="docs/images/demo.png")
    parser.add_argument("--constraint-query", default="cordless drill, not corded",
                        help="a text with a constraint: its chips are shown, then one is removed")
    args = parser.parse_args(argv)
    item = {"id": f"demo-{int(time.time())}", "title": "FirstLight demo lantern with solar panel"}
    seen = drive(args.url, Path(args.token_file).read_text().strip(), args.query, item, Path(args.screenshot),
                 args.constraint_query)
    for step, value in seen.items():
        print(step, [r.get("title") or r.get("text") for r in value][:5] if isinstance(value, list) else value)


if __name__ == "__main__":
    main()
