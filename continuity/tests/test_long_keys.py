"""Keys too long for a URL open through a short handle; list pages cut long keys."""

import re

import pytest

from django.core.cache import cache
from django.urls import reverse

from continuity import keyspace
from continuity.operations import review
from continuity.models import Namespace
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")

LONG_KEY = b"lucia:session:" + b"k" * 4096  # 4 KB: its token alone is 5.5 KB, a 414 behind gunicorn or nginx


def _link_for(page, label_start):
    hrefs = re.findall(r'href="(/keyspace/lucia/key/[^"]+/)"', page)
    assert hrefs, "no key link on the page"
    return hrefs


def test_it_opens_a_4kb_key_from_the_browser_link_and_acts_on_it(operator_client, monitored, lucia):
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    monitored.set(LONG_KEY, b"long value", ex=100)
    monitored.set(b"lucia:session:short", b"v")
    page = operator_client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:session:").content.decode()
    hrefs = _link_for(page, "lucia:session:")
    short_href = reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(b"lucia:session:short")])
    assert short_href in hrefs  # short keys keep their token URL
    [long_href] = [h for h in hrefs if h != short_href]
    assert len(long_href) < 120 and "/key/h." in long_href

    detail = operator_client.get(long_href)
    body = detail.content.decode()
    assert detail.status_code == 200 and "long value" in body
    assert keyspace.display_key(LONG_KEY) in body  # the detail page names the whole key

    action_href = re.search(r'hx-post="(/keyspace/lucia/key/[^"]+/action/)"|action="(/keyspace/lucia/key/[^"]+/action/)"',
                            body)
    action_url = next(g for g in action_href.groups() if g)
    assert len(action_url) < 130
    operator_client.post(action_url, {"action": "extend_ttl", "seconds": "50"})
    assert 140 < monitored.ttl(LONG_KEY) <= 150
    entry = AuditEntry.objects.get(action="key.extend_ttl")
    assert entry.before["key"] == keyspace.display_key(LONG_KEY) and entry.after["applied"] is True


def test_it_explains_an_expired_handle(viewer_client, monitored, lucia):
    monitored.set(LONG_KEY, b"v")
    page = viewer_client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:session:").content.decode()
    [href] = _link_for(page, "lucia:session:")
    cache.clear()
    response = viewer_client.get(href)
    assert response.status_code == 410 and "This link to a long key has expired." in response.content.decode()
    bogus = reverse("continuity:key_detail", args=["lucia", "h.not-a-digest"])
    assert viewer_client.get(bogus).status_code == 404


def test_a_review_page_cuts_a_100kb_key(viewer_client, monitored, lucia):
    huge = b"lucia:session:" + b"x" * 100_000
    monitored.set(huge, b"v")  # no TTL: a no_ttl sample
    run = review.review_database(database=lucia).run
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert len(page) < 60_000
    assert "lucia:session:" + "x" * 186 + "… (100,014 bytes)" in page
    [href] = {h for h in _link_for(page, "") if "/key/h." in h}
    assert "x" * 300 not in href and viewer_client.get(href).status_code == 200


def test_a_purge_preview_cuts_a_100kb_key_in_its_sample(operator_client, monitored, lucia, eager,
                                                        django_capture_on_commit_callbacks):
    from continuity.models import PurgeRun

    monitored.set(b"lucia:session:" + b"y" * 100_000, b"v")
    with django_capture_on_commit_callbacks(execute=True):  # the worker's preview, eagerly
        operator_client.post(reverse("continuity:purge_new"),
                             {"database": "lucia", "target_kind": "prefix", "target": "lucia:session:",
                              "action": "delete"})
    page = operator_client.get(PurgeRun.objects.get().get_absolute_url()).content.decode()
    assert len(page) < 60_000 and "y" * 186 + "… (100,014 bytes)" in page
