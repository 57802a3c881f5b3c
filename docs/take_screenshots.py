"""Screenshots of a running dashboard for the README.

    DASHBOARD_ADMIN_PASSWORD=… make run            # in one terminal
    .venv/bin/python docs/take_screenshots.py http://127.0.0.1:8000 admin PASSWORD

With no names it takes the standalone pages (PAGES, at 1400 × 900) and the phone pages
(PHONE_PAGES, at 390 × 844). The cluster pages need
`DEMO_CLUSTER=1 make run`, a finished review and a finished purge (start both from the jobs
page first); they show the latest of each unless given a path:

    .venv/bin/python docs/take_screenshots.py URL admin PASSWORD cluster-database cluster-review \\
        cluster-browse cluster-purge
    .venv/bin/python docs/take_screenshots.py URL admin PASSWORD cluster-purge=/keyspace/purges/3/

A name that is neither in PAGES nor in CLUSTER_PAGES is taken as a page path.
"""

import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = {"home": "/", "runbook": "/runbook/", "keyspace": "/keyspace/",
         "browse": "/keyspace/lucia/browse/?prefix=lucia:session:", "jobs": "/keyspace/jobs/", "audit": "/audit/",
         "secrets-lucia-rest-token": "/secrets/lucia-rest-token/"}
PHONE_PAGES = {"home-phone": "/"}
# name: (path, the element scrolled to the top)
FOCUSED_PAGES = {"runbook-failure": ("/runbook/", "#dashboard-behaviour")}
# name: (path, or (list page, link pattern) for the latest run, element scrolled to the top or None)
CLUSTER_PAGES = {
    "cluster-database": ("/databases/lucia/", '[data-testid="topology"]'),
    "cluster-review": (("/keyspace/jobs/", r"/keyspace/jobs/reviews/\d+/$"), None),
    "cluster-browse": ("/keyspace/lucia/browse/?prefix=lucia:session:", None),
    "cluster-purge": (("/keyspace/purges/", r"/keyspace/purges/\d+/$"), "h2:has-text('Progress')"),
}
OUT = Path(__file__).parent / "screenshots"
DESKTOP, PHONE = {"width": 1400, "height": 900}, {"width": 390, "height": 844}


def latest(page, base, list_path, pattern):
    """The first link on `list_path` whose href matches `pattern` (lists are newest first)."""
    page.goto(base + list_path)
    for href in page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        if re.search(pattern, href):
            return href
    raise SystemExit(f"No link matching {pattern} on {list_path}: run one first.")


def take(page, base, name, path, focus, viewport=DESKTOP):
    page.set_viewport_size(viewport)
    page.goto(base + path)
    page.wait_for_load_state("networkidle")
    if focus:
        page.locator(focus).first.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.mouse.move(0, 0)
    page.screenshot(path=str(OUT / f"{name.strip('/').replace('/', '-') or 'home'}.png"), full_page=False)


def main(base, username, password, names):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport=DESKTOP)
        page.goto(base + "/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("networkidle")
        for item in names or [*PAGES, *PHONE_PAGES, *FOCUSED_PAGES]:
            name, _, given = item.partition("=")
            path, focus = {**CLUSTER_PAGES, **FOCUSED_PAGES}.get(name, ({**PAGES, **PHONE_PAGES}.get(name, name), None))
            if given:
                path = given
            elif isinstance(path, tuple):
                path = latest(page, base, *path)
            take(page, base, name, path, focus, PHONE if name in PHONE_PAGES else DESKTOP)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
