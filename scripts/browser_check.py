#!/usr/bin/python3
"""The shelf page in a real browser: headless Chromium driven by Selenium (Debian chromium,
chromium-driver, python3-selenium).

Usage: browser_check.py URL ADAPTER PROMPT MAX_TOKENS EXPECTED_FILE REFUSED_NAME [--screenshots DIR]

Opens URL (a running `lowra serve`), waits for the adapter table, checks that ADAPTER is listed as
admissible and that REFUSED_NAME is listed with its reason, chats with ADAPTER (greedy, streamed) and
checks that the streamed answer equals EXPECTED_FILE's text (what `lowra generate --chat` printed).
Exits 1 with the reason on the first failed check.
"""
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def fail(message):
    print(f"browser check failed: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 7:
        fail(__doc__)
    url, adapter, prompt, max_tokens, expected_file, refused = sys.argv[1:7]
    shots = sys.argv[sys.argv.index("--screenshots") + 1] if "--screenshots" in sys.argv else None
    expected = open(expected_file, encoding="utf-8").read()
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--disable-gpu"]:
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    started = time.time()
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 30)
        row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-adapter="{adapter}"]'))[0]
        if "admissible" not in row.text:
            fail(f"{adapter}'s row does not say it is admissible: {row.text!r}")
        refusal = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-refused="{refused}"]'))[0]
        if len(refusal.text.split(refused, 1)[-1].strip()) < 5:
            fail(f"the refused adapter {refused} has no reason: {refusal.text!r}")
        if shots:
            os.makedirs(shots, exist_ok=True)
            driver.save_screenshot(os.path.join(shots, "shelf-page.png"))
        wait.until(lambda d: any(o.get_attribute("value").split("@")[0] == adapter
                                 for o in d.find_elements(By.CSS_SELECTOR, "#model option")))
        select = Select(driver.find_element(By.ID, "model"))
        values = [o.get_attribute("value") for o in select.options]
        value = next(v for v in values if v.split("@")[0] == adapter)
        select.select_by_value(value)
        field = driver.find_element(By.ID, "max")
        field.clear()
        field.send_keys(max_tokens)
        driver.find_element(By.ID, "prompt").send_keys(prompt)
        driver.find_element(By.ID, "send").click()
        answer = driver.find_element(By.ID, "answer")
        WebDriverWait(driver, 60).until(lambda d: answer.get_attribute("data-done") != "false")
        if answer.get_attribute("data-done") != "true":
            fail(f"the chat failed: {answer.text!r}")
        got = driver.execute_script("return document.getElementById('answer').textContent")
        if got != expected:
            fail(f"the streamed answer {got!r} differs from lowra generate's {expected!r}")
        if shots:
            driver.execute_script("document.querySelector('#refused').scrollIntoView()")
            driver.save_screenshot(os.path.join(shots, "shelf-chat-and-refusals.png"))
        print(f"browser check passed in {time.time() - started:.1f} s: {adapter} answered {got!r}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
