"""The layout operators feel, in Chromium at 1366 and 390 px: a menu that folds on a phone, no
page wider than the screen (long keys and values wrap or scroll inside their box), a skip link,
a visible focus ring and a proper label on every field."""

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from continuity import keyspace
from continuity.models import Namespace
from continuity.operations import purge, review
from dashboard.models import AlertChannel, AuditEntry, Secret
from dashboard.tests.browsing import WIDTHS, ServerErrors, assert_no_sideways_scroll, log_in, settle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_KEY = b"lucia:focus:" + b"k" * 600  # past the URL limit: opened through a short handle
LONG_VALUE = b"v" * 20_000  # one unbroken line


@pytest.fixture
def filled(lucia, monitored, admin):
    """A keyspace with keys in every namespace, a long key, a long unbroken value, a review,
    a purge preview and an alert channel: every page has something to lay out."""
    pipe = monitored.pipeline()
    for namespace in ("session", "distress", "focus", "action", "rate"):
        for number in range(20):
            pipe.set(f"lucia:{namespace}:{number}", b"x" * 40, ex=900)
    pipe.set("lucia:session:stuck", b"x")
    pipe.set(LONG_KEY, b"long key", ex=900)
    pipe.set("lucia:focus:long-value", LONG_VALUE, ex=900)
    pipe.execute()
    run = review.review_database(database=lucia).run
    preview = purge.new_run(database=lucia, kind="prefix", value=b"lucia:rate:", action="delete", actor=admin)
    preview.save()
    AlertChannel.objects.create(name="pager", kind="webhook", url="https://alerts.example.com/hook")
    return {"review": run, "purge": preview}


def _pages(lucia, filled):
    namespace = Namespace.objects.get(database=lucia, name="session")
    entry = AuditEntry.objects.order_by("-pk").first()
    from django_celery_beat.models import PeriodicTask

    schedule = PeriodicTask.objects.get(name="ttl review")
    return [
        reverse("dashboard:home"), reverse("dashboard:first_screen"), reverse("dashboard:runbook"),
        reverse("dashboard:database_list"), lucia.get_absolute_url(), reverse("dashboard:secret_list"),
        Secret.objects.get(name="lucia-rest-token").get_absolute_url(), reverse("dashboard:envvar_list"),
        reverse("dashboard:checklist"), reverse("dashboard:account_list"), reverse("dashboard:phase_list"),
        reverse("dashboard:alert_list"), reverse("dashboard:audit_list"),
        reverse("dashboard:audit_detail", args=[entry.pk]), reverse("dashboard:user_list"),
        reverse("dashboard:database_edit", args=["lucia"]), reverse("password_change"),
        reverse("continuity:overview"), reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:focus:",
        reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(b"lucia:focus:long-value")]),
        reverse("continuity:namespace_list", args=["lucia"]),
        reverse("continuity:namespace_edit", args=["lucia", namespace.pk]),
        reverse("continuity:job_list"), reverse("continuity:review_detail", args=[filled["review"].pk]),
        reverse("continuity:review_trend", args=["lucia"]), reverse("continuity:schedule_edit", args=[schedule.pk]),
        reverse("continuity:purge_list"), reverse("continuity:purge_new", args=[]) + "?database=lucia",
        filled["purge"].get_absolute_url(),
    ]


@pytest.mark.parametrize("viewport", WIDTHS)
def test_no_page_scrolls_sideways(page, live_server, lucia, filled, viewport):
    errors = ServerErrors(page)
    log_in(page, live_server, "ada", viewport)
    for path in _pages(lucia, filled):
        page.goto(live_server.url + path)
        settle(page)
        assert_no_sideways_scroll(page, f"{path} at {viewport}")
    assert errors.seen == []


@pytest.mark.parametrize("viewport", WIDTHS)
def test_a_long_value_and_a_long_key_stay_inside_their_boxes(page, live_server, lucia, filled, viewport):
    log_in(page, live_server, "ada", viewport)
    page.goto(live_server.url + reverse("continuity:key_detail",
                                        args=["lucia", keyspace.encode_key(b"lucia:focus:long-value")]))
    value = page.get_by_test_id("value")
    expect(value).to_be_visible()
    box = value.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTHS[viewport]["width"]
    assert value.evaluate("e => e.scrollHeight > e.clientHeight")  # 20,000 characters: it scrolls inside
    assert_no_sideways_scroll(page)
    page.goto(live_server.url + reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:focus:k")
    expect(page.get_by_test_id("key-row")).to_have_count(1)
    assert_no_sideways_scroll(page)


def test_the_menu_folds_behind_a_button_on_a_phone(page, live_server, lucia, admin):
    log_in(page, live_server, "ada", "phone")
    menu, button = page.locator("#main-menu"), page.get_by_test_id("menu-button")
    expect(button).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(menu.get_by_role("link", name="Jobs")).to_be_hidden()
    assert page.get_by_test_id("first-screen-region").bounding_box()["y"] < 200  # the first screen comes first
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    menu.get_by_role("link", name="Jobs").click()
    expect(page).to_have_url(live_server.url + reverse("continuity:job_list"))
    expect(page.locator("#main-menu").get_by_role("link", name="Jobs")).to_be_hidden()


def test_the_menu_stays_open_on_a_laptop(page, live_server, lucia, admin):
    log_in(page, live_server, "ada", "desktop")
    expect(page.get_by_test_id("menu-button")).to_be_hidden()
    expect(page.locator("#main-menu").get_by_role("link", name="Jobs")).to_be_visible()


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_first_tab_reaches_a_skip_link_and_every_focus_is_visible(page, live_server, lucia, admin, viewport):
    log_in(page, live_server, "ada", viewport)
    page.goto(live_server.url + reverse("dashboard:secret_list"))
    page.keyboard.press("Tab")
    skip = page.get_by_test_id("skip-link")
    expect(skip).to_be_focused()
    assert skip.bounding_box()["y"] >= 0  # shown when focused
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")  # the first thing of the page itself, not the menu
    focused = page.evaluate("() => document.activeElement.closest('main') !== null")
    assert focused
    ring = page.evaluate("() => { const s = getComputedStyle(document.activeElement); "
                         "return [s.outlineStyle, parseFloat(s.outlineWidth)]; }")
    assert ring[0] == "solid" and ring[1] >= 2


AUTO_LABEL = re.compile(r"\b(Ttl|ttl|Url|url|Mfa|mfa|Tcp|tcp|Id)\b")
FORMS = ["dashboard:account_create", "dashboard:secret_create", "dashboard:envvar_create", "dashboard:checklist_create",
         "dashboard:phase_create", "dashboard:alert_channel_create", "dashboard:user_list", "dashboard:audit_list",
         "password_change"]


@pytest.mark.parametrize("viewport", WIDTHS)
def test_every_field_has_a_proper_label(page, live_server, lucia, admin, viewport):
    log_in(page, live_server, "ada", viewport)
    namespace = Namespace.objects.get(database=lucia, name="session")
    from django_celery_beat.models import PeriodicTask

    urls = [reverse(name) for name in FORMS] + [
        reverse("dashboard:database_edit", args=["lucia"]),
        reverse("continuity:namespace_edit", args=["lucia", namespace.pk]),
        reverse("continuity:schedule_edit", args=[PeriodicTask.objects.get(name="ttl review").pk]),
        reverse("continuity:browse", args=["lucia"])]
    for url in urls:
        page.goto(live_server.url + url)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
              'main input:not([type=hidden]):not([type=submit]), main select, main textarea')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby'))
            .map(e => e.name)""")
        assert unlabelled == [], url
        labels = page.evaluate("() => [...document.querySelectorAll('main label')].map(l => l.textContent.trim())")
        # An auto-generated label spells an acronym as a word: "Ttl required", "Min ttl seconds".
        assert not [label for label in labels if AUTO_LABEL.search(label)], (url, labels)
