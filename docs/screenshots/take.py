"""Take the README's screenshots: a fresh data folder, one turn of the loop on the real model, headless Chromium.

    .venv/bin/python docs/screenshots/take.py      (needs Debian's chromium and chromium-driver)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
PORT = 8765


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="prefloop-shots-"))
    env = dict(os.environ, PREFLOOP_DATA_DIR=str(work), DATABASE_URL=f"sqlite:///{work / 'db.sqlite3'}",
               PREFLOOP_ADMIN_PASSWORD="demo-password", PREFLOOP_BASE_MODEL=str(ROOT / "var/models/smollm2-135m-instruct"))
    manage(env, "migrate", "-v", "0")
    manage(env, "bootstrap_model")
    manage(env, "ensure_admin")
    manage(env, "load_demo")
    manage(env, "generate_pairs", "--prompts", "6", "--samples", "2", "--max-new-tokens", "64")
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{PORT}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        shoot(env)
    finally:
        server.terminate()


def shoot(env) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                 f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=opts)
    base = f"http://127.0.0.1:{PORT}"
    try:
        driver.get(f"{base}/accounts/login/")
        driver.save_screenshot(str(OUT / "01-login.png"))
        driver.find_element(By.NAME, "username").send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys("demo-password")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        time.sleep(1)
        driver.get(f"{base}/generation/")
        driver.save_screenshot(str(OUT / "02-generate.png"))
        driver.get(f"{base}/annotate/")
        time.sleep(1)
        driver.save_screenshot(str(OUT / "03-label.png"))
        body = driver.find_element(By.TAG_NAME, "body")
        for key in "1212121212":
            body.send_keys(key)
            time.sleep(0.8)
        manage(env, "train_round", "--params", '{"epochs": 1, "batch_size": 2, "max_length": 384}')
        driver.get(f"{base}/training/")
        driver.save_screenshot(str(OUT / "04-train.png"))
        manage(env, "compare_versions", "base", "round-1", "--limit", "3", "--max-new-tokens", "64")
        driver.get(f"{base}/compare/")
        time.sleep(1)
        links = driver.find_elements(By.CSS_SELECTOR, "a[href*='/compare/sets/']")
        if links:
            driver.get(links[0].get_attribute("href"))
            time.sleep(1)
        driver.save_screenshot(str(OUT / "05-compare.png"))
        driver.get(f"{base}/compare/leaderboard/")
        driver.save_screenshot(str(OUT / "06-leaderboard.png"))
        run_links = f"{base}/training/runs/1/"
        driver.get(run_links)
        driver.save_screenshot(str(OUT / "07-dashboard.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
