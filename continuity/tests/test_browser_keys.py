"""Browse a prefix full of odd keys in Chromium, open one, extend its TTL."""

import re

import pytest
from playwright.sync_api import expect

from continuity import keyspace
from dashboard.models import AuditEntry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
ODD = [b"lucia:focus:odd:<script>alert(1)</script>", b"lucia:focus:odd:a*b?[c]\\d", b"lucia:focus:odd:bin\xff\xfe",
       b"lucia:focus:odd:sp ace \"q\" 'q'\nnl"]


def test_it_browses_odd_keys_opens_one_and_extends_its_ttl(page, live_server, operator, lucia, monitored):
    for key in ODD:
        monitored.set(key, b"odd value", ex=600)
    monitored.set(b"lucia:focus:oddity", b"outside the prefix", ex=600)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(live_server.url + "/keyspace/lucia/browse/")
    page.get_by_label("Username").fill("otto")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/keyspace/lucia/browse/$"))
    page.get_by_label("Literal prefix").fill("lucia:focus:odd:")
    page.get_by_role("button", name="Scan").click()
    expect(page.get_by_test_id("match-pattern")).to_have_text("lucia:focus:odd:*")
    rows = page.get_by_test_id("key-row")
    expect(rows).to_have_count(len(ODD))
    for key in ODD:
        expect(page.locator(f'[data-token="{keyspace.encode_key(key)}"]')).to_have_count(1)
    expect(page.get_by_role("link", name="lucia:focus:odd:<script>alert(1)</script>")).to_be_visible()
    page.locator(f'[data-token="{keyspace.encode_key(ODD[1])}"] a').click()
    expect(page.get_by_test_id("key-name")).to_have_text("lucia:focus:odd:a*b?[c]\\d")
    expect(page.get_by_test_id("value")).to_have_text("odd value")
    page.get_by_placeholder("15m, 1h, 7d").fill("50m")  # a duration: 3,000 s
    page.get_by_role("button", name="Extend TTL").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Extend TTL: done.")
    assert 3_500_000 < monitored.pttl(ODD[1]) <= 3_600_000
    expect(page.get_by_test_id("ttl")).to_contain_text("59m")
    entry = AuditEntry.objects.get(action="key.extend_ttl")
    assert entry.target_id == keyspace.encode_key(ODD[1]) and entry.actor_label == "otto"
    assert dialogs == []  # no injected script ran
