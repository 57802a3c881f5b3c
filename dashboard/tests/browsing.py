"""Helpers of the browser tests that walk pages at the two widths operators use: a laptop
(1366 × 768) and a phone (390 × 844)."""

import re

from playwright.sync_api import expect

PASSWORD = "correct horse battery staple"
WIDTHS = {"desktop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}

# What overflows the page sideways, if anything: how far, and the first elements past the edge.
_OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const over = document.documentElement.scrollWidth - width;
  const culprits = [];
  if (over > 0) {
    for (const element of document.body.querySelectorAll('*')) {
      const box = element.getBoundingClientRect();
      if (box.width > 0 && box.right > width + 1) {
        culprits.push(`${element.tagName.toLowerCase()}.${element.className} → ${Math.round(box.right)} px`);
        if (culprits.length === 6) break;
      }
    }
  }
  return {over, culprits};
}"""


def sideways(page):
    """How many pixels `page` would scroll sideways (0: none) and the first elements past its edge."""
    found = page.evaluate(_OVERFLOW_JS)
    return found["over"], found["culprits"]


def assert_no_sideways_scroll(page, where=""):
    over, culprits = sideways(page)
    assert over <= 0, f"{where or page.url} scrolls {over} px sideways: {culprits}"


def settle(page):
    """The page loaded and its htmx regions in place: no htmx request in flight and nothing
    swapping or settling (what "networkidle" waits for, without its half second of silence
    after every page; the pages fetch nothing but through htmx)."""
    page.wait_for_load_state("load")
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def log_in(page, live_server, username, viewport="desktop"):
    page.set_viewport_size(WIDTHS[viewport])
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_be_attached()


class ServerErrors:
    """Every answer of 500 or more the page received (documents, htmx, static files)."""

    def __init__(self, page):
        self.seen = []
        page.on("response", lambda response: response.status >= 500 and self.seen.append(
            f"{response.status} {response.request.method} {response.url}"))


MOMENT = re.compile(r"^\d{4}-\d\d-\d\d( \d\d:\d\d UTC)? \((just now|in .+|.+ ago|today|yesterday|tomorrow)\)$")
