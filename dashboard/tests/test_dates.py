"""One date format everywhere: absolute (the dashboard's time zone) with a relative hint."""

import re
from datetime import date, datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard.models import AuditEntry, Secret
from dashboard.templatetags.when import absolute, at, relative, when

NOW = datetime(2026, 12, 6, 21, 27, 30, tzinfo=dt_timezone.utc)
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.mark.parametrize("delta, hint", [
    (timedelta(seconds=0), "just now"),
    (timedelta(seconds=4), "just now"),
    (timedelta(seconds=5), "5 s ago"),
    (timedelta(seconds=59), "59 s ago"),
    (timedelta(seconds=60), "1 min ago"),
    (timedelta(minutes=59, seconds=59), "59 min ago"),
    (timedelta(hours=1), "1 h ago"),
    (timedelta(hours=47, minutes=59), "47 h ago"),
    (timedelta(hours=48), "2 days ago"),
    (-timedelta(hours=25), "in 25 h"),
    (-timedelta(hours=72), "in 3 days"),
    (-timedelta(minutes=3), "in 3 min"),
])
def test_it_gives_a_relative_hint_at_each_boundary(delta, hint):
    assert relative(NOW - delta, now=NOW) == hint


def test_a_date_is_a_day_and_a_datetime_is_a_minute_in_utc():
    assert absolute(NOW) == "2026-12-06 21:27 UTC"
    assert absolute(date(2026, 12, 9)) == "2026-12-09"
    assert relative(date(2026, 12, 9), now=NOW) == "in 3 days"
    assert relative(date(2026, 12, 5), now=NOW) == "yesterday"
    assert at(None) == when(None) == when("") == ""
    rendered = when(NOW)
    assert rendered.startswith('<time datetime="2026-12-06T21:27:30+00:00" title="2026-12-06T21:27:30+00:00">'
                               '2026-12-06 21:27 UTC</time> <span class="when-ago">(')


def test_no_template_formats_a_date_its_own_way():
    found = []
    for path in TEMPLATES.rglob("*.*"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\|\s*(date|time|naturaltime|naturalday|timesince|timeuntil)\b", line):
                found.append(f"{path.relative_to(TEMPLATES)}:{number}")
    assert found == []


def test_pages_show_moments_the_one_way(viewer_client, lucia):
    secret = Secret.objects.get(name="lucia-rest-token")
    Secret.objects.filter(pk=secret.pk).update(last_rotated=timezone.now() - timedelta(days=3))
    entry = AuditEntry.objects.order_by("-pk").first()
    pages = [reverse("dashboard:audit_list"), reverse("dashboard:audit_detail", args=[entry.pk]),
             secret.get_absolute_url(), reverse("dashboard:secret_list"), reverse("dashboard:runbook")]
    for url in pages:
        body = viewer_client.get(url).content.decode()
        moments = re.findall(r'<time datetime="[^"]+" title="[^"]+">(\d{4}-\d\d-\d\d(?: \d\d:\d\d UTC)?)</time> '
                             r'<span class="when-ago">\(([^)]+)\)</span>', body)
        assert moments, url
        assert not re.search(r"\b(a\.m\.|p\.m\.|Jan\.|Feb\.|Dec\.)", body), url
    body = viewer_client.get(secret.get_absolute_url()).content.decode()
    assert re.search(r"Last rotated: <strong><time [^>]+>\d{4}-\d\d-\d\d \d\d:\d\d UTC</time> "
                     r'<span class="when-ago">\(3 days ago\)</span>', body)
