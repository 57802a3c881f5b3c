"""Screenshots of a running dashboard for the README.

    DASHBOARD_ADMIN_PASSWORD=… make run            # in one terminal
    .venv/bin/python docs/take_screenshots.py http://127.0.0.1:8000 admin PASSWORD
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = {"runbook": "/", "keyspace": "/keyspace/", "jobs": "/keyspace/jobs/", "audit": "/audit/"}
OUT = Path(__file__).parent / "screenshots"


def main(base, username, password, names):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("networkidle")
        for name in names or PAGES:
            page.goto(base + PAGES.get(name, name))
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(OUT / f"{name.strip('/').replace('/', '-') or 'home'}.png"), full_page=False)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
