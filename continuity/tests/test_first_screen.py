"""The first screen (top of the home page): health with ages, the share of keys inside policy
from the last review, keys without TTL, a loss the keyspace watch found, and the alert
channels, or the warning that there are none."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from continuity.models import KeyspaceCheck
from continuity.operations import keyspace_watch, review
from dashboard.devtools import localservers
from dashboard.models import AlertChannel

URL = reverse("dashboard:first_screen")


def _fragment(client):
    response = client.get(URL, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def _row(body, testid):
    return re.search(rf'<li data-testid="{testid}" data-state="(\w+)">(.*?)</li>', body, re.S).groups()


def _fill(monitored):
    pipe = monitored.pipeline()
    for i in range(6):
        pipe.set(f"lucia:session:{i}", b"x", ex=1800)
    pipe.set("lucia:session:stuck", b"x")  # no TTL
    pipe.set("lucia:session:long", b"x", ex=7200)  # above the 1 h maximum
    for i in range(4):
        pipe.set(f"lucia:focus:{i}", b"x", ex=600)
    pipe.execute()


def test_it_shows_health_policy_share_keys_without_ttl_and_the_channels(viewer_client, lucia, monitored,
                                                                         django_assert_num_queries):
    _fill(monitored)
    run = review.review_database(database=lucia).run
    keyspace_watch.check_database(lucia)
    PeriodicTask.objects.filter(name="keyspace watch").update(last_run_at=timezone.now() - timedelta(seconds=50))
    AlertChannel.objects.create(name="pager", kind="webhook", url="https://alerts.example.com/hook")
    _fragment(viewer_client)
    with django_assert_num_queries(13):
        body = _fragment(viewer_client)
    assert "<html" not in body
    state, text = _row(body, "health-redis")
    assert state == "up" and "Redis lucia" in text and "answered a ping" in text and "when-ago" in text
    state, text = _row(body, "health-worker")
    assert state == "up" and "last ran the keyspace watch" in text
    state, text = _row(body, "health-beat")
    assert state == "up" and "(50 s ago)" in text
    state, text = _row(body, "health-alerts")
    assert state == "configured" and "pager" in text
    assert re.search(r'data-testid="keys">12</strong> keys, <strong data-testid="keys-without-ttl">1</strong> '
                     r'without TTL', body)
    assert f'review #{run.pk}</a>' in body and 'data-testid="review-kind">exact</span>' in body
    shares = dict(re.findall(r'data-namespace="(\w+)">.*?data-testid="share"><span [^>]+>([^<]+)</span>', body, re.S))
    assert shares == {"focus": "100.0%", "session": "75.0%"}
    assert 'data-testid="loss-alarm"' not in body
    assert 'data-testid="persistence-off"' in body  # the test server keeps nothing on disk


def test_a_sampled_review_is_named_and_its_shares_have_an_interval(viewer_client, lucia, monitored):
    _fill(monitored)
    pipe = monitored.pipeline()
    for i in range(600):
        pipe.set(f"lucia:focus:more:{i}", b"x", ex=600)
    pipe.execute()
    run = review.review_database(database=lucia, sample=200).run
    assert run.sampled
    body = _fragment(viewer_client)
    assert 'data-testid="review-kind">sampled: ' in body
    assert re.search(r'data-testid="share"><span [^>]+>≈ [\d.]+%</span> <span class="is-size-7 has-text-grey">'
                     r'\d+–\d+%</span>', body)


def test_it_says_what_is_missing_when_nothing_runs_or_answers(viewer_client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    body = _fragment(viewer_client)
    state, text = _row(body, "health-redis")
    assert state == "down" and "Redis is unreachable" in text
    state, text = _row(body, "health-worker")
    assert state == "down" and "has not run the keyspace watch yet" in text and "wait for a worker" in text
    state, text = _row(body, "health-beat")
    assert state == "down" and "has not sent a scheduled task yet" in text
    state, text = _row(body, "health-alerts")
    assert state == "none" and "No alert channel is enabled: alerts go nowhere." in text
    assert "Ask an admin to add one." in text
    assert "No review has finished yet" in body and "The keyspace watch has not read it yet" in body


def test_a_silent_worker_and_beat_are_named_by_the_age_of_their_last_sign(viewer_client, lucia):
    long_ago = timezone.now() - timedelta(minutes=6)
    KeyspaceCheck.objects.create(database=lucia, checked_at=long_ago, keys=3)
    PeriodicTask.objects.filter(name="keyspace watch").update(last_run_at=long_ago)
    body = _fragment(viewer_client)
    assert _row(body, "health-worker")[0] == "down" and "(6 min ago)" in _row(body, "health-worker")[1]
    assert _row(body, "health-beat")[0] == "down" and "no scheduled review, check or alert runs" in body
    KeyspaceCheck.objects.create(database=lucia, checked_at=timezone.now() - timedelta(minutes=2, seconds=59), keys=3)
    assert _row(_fragment(viewer_client), "health-worker")[0] == "up"


@pytest.mark.parametrize("hours, shown", [(23, True), (24, True), (25, False)])
def test_a_loss_stays_on_the_first_screen_for_a_day(viewer_client, lucia, hours, shown):
    found = timezone.now() - timedelta(hours=hours) + timedelta(seconds=5 if hours == 24 else 0)
    KeyspaceCheck.objects.create(database=lucia, checked_at=found, keys=5, event=KeyspaceCheck.LOST,
                                 event_text="lucia lost 315 of 320 keys (98%).", alerted=["keyspace.lost"])
    body = _fragment(viewer_client)
    assert ('data-testid="loss-alarm" data-event="keyspace.lost"' in body) is shown
    if shown:
        assert "Keys lost</strong>, found" in body and "lucia lost 315 of 320 keys (98%). Alerted once." in body


def test_a_loss_that_went_to_no_channel_says_so(viewer_client, lucia):
    KeyspaceCheck.objects.create(database=lucia, keys=5, event=KeyspaceCheck.LOST, event_text="lucia lost 9 of 10 keys.")
    body = _fragment(viewer_client)
    assert "lucia lost 9 of 10 keys. <strong>Not alerted: no alert channel was enabled.</strong>" in body


def test_the_home_page_loads_it_as_a_region_and_it_is_a_page_of_its_own(viewer_client, client, lucia):
    home = viewer_client.get(reverse("dashboard:home")).content.decode()
    assert f'hx-get="{URL}" hx-trigger="load, every 30s"' in home
    page = viewer_client.get(URL).content.decode()
    assert "<html" in page and 'data-testid="first-screen"' in page
    assert client.get(URL).status_code == 302  # sign in first


def test_recent_changes_are_a_list_not_a_squeezed_table(viewer_client, lucia):
    home = viewer_client.get(reverse("dashboard:home")).content.decode()
    recent = home.split('data-testid="recent-changes"')[1].split("</ul>")[0]
    assert recent.count('data-testid="recent-change"') == 10 and "<table" not in recent
