from datetime import timedelta

import pytest
from django.utils import timezone

from continuity.models import ReviewRun
from continuity.operations import alerting
from dashboard.devtools import localservers
from dashboard.models import AlertChannel

pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture
def hook(db, receiver):
    return AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))


def _run(database, findings):
    return ReviewRun.objects.create(database=database, status=ReviewRun.SUCCEEDED, findings=findings,
                                    finished_at=timezone.now())


def _events(receiver):
    return [r["json"]["event"] for r in receiver.requests]


def test_a_review_alerts_once_when_findings_cross_the_threshold(lucia, hook, receiver, eager, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.ALERT_REVIEW_FINDINGS_THRESHOLD = 10
    with django_capture_on_commit_callbacks(execute=True):
        assert alerting.alert_on_review(_run(lucia, {"no_ttl": 3})) is None
        assert alerting.alert_on_review(_run(lucia, {"no_ttl": 8, "oversized": 4})) == "review.findings"
        assert alerting.alert_on_review(_run(lucia, {"no_ttl": 20})) is None  # still above: no repeat
        assert alerting.alert_on_review(_run(lucia, {"no_ttl": 1})) == "review.resolved"
    assert _events(receiver) == ["review.findings", "review.resolved"]
    first = receiver.requests[0]["json"]
    assert "12 findings" in first["title"] and "no_ttl 8" in first["text"] and "oversized 4" in first["text"]
    assert first["link"].startswith("http") and "/keyspace/jobs/reviews/" in first["link"]


def test_an_unreachable_redis_alerts_once_after_the_grace_period_and_once_when_back(
        lucia, hook, receiver, eager, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.ALERT_REDIS_DOWN_MINUTES = 5
    real_url = settings.REDIS_URL
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        first = alerting.check_monitored_redis(now=start)
        assert first[0].ok is False and first[0].event is None
        assert alerting.check_monitored_redis(now=start + timedelta(minutes=4))[0].event is None
        assert alerting.check_monitored_redis(now=start + timedelta(minutes=5))[0].event == "redis.unreachable"
        assert alerting.check_monitored_redis(now=start + timedelta(minutes=9))[0].event is None
        monkeypatch.setenv("REDIS_URL", real_url)
        back = alerting.check_monitored_redis(now=start + timedelta(minutes=10))
        assert back[0].ok and back[0].event == "redis.recovered"
        assert alerting.check_monitored_redis(now=start + timedelta(minutes=11))[0].event is None
    assert _events(receiver) == ["redis.unreachable", "redis.recovered"]
    assert receiver.requests[0]["json"]["severity"] == "critical"
    assert "unreachable" in receiver.requests[0]["json"]["text"]


def test_a_short_blip_sends_nothing(lucia, hook, receiver, eager, settings, monkeypatch,
                                    django_capture_on_commit_callbacks):
    real_url = settings.REDIS_URL
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        alerting.check_monitored_redis(now=start)
        monkeypatch.setenv("REDIS_URL", real_url)
        assert alerting.check_monitored_redis(now=start + timedelta(minutes=1))[0].event is None
    assert receiver.requests == []


def test_the_health_check_is_scheduled_every_minute(lucia):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(name="monitored redis check")
    assert task.task == "continuity.check_monitored_redis" and task.enabled
    assert (task.interval.every, task.interval.period) == (1, "minutes")


def test_a_review_task_sends_its_alert_through_the_channels(lucia, hook, receiver, eager, monitored,
                                                            django_capture_on_commit_callbacks):
    from continuity.operations import review
    from continuity.tasks.review import review_database_task

    monitored.set("lucia:session:no-ttl", "x")
    monitored.set("lucia:session:fine", "x", ex=1800)
    run = review.start_review(database=lucia)
    with django_capture_on_commit_callbacks(execute=True):
        assert review_database_task.apply(args=[run.pk]).get() == ReviewRun.SUCCEEDED
    assert _events(receiver) == ["review.findings"]
    assert "1 findings" in receiver.requests[0]["json"]["title"]


def test_a_purge_alerts_when_it_finishes_and_when_it_fails(lucia, hook, receiver, eager, monitored, operator,
                                                           django_capture_on_commit_callbacks):
    from continuity.operations import purge

    for i in range(20):
        monitored.set(f"lucia:session:gone-{i}", "x", ex=900)
    with django_capture_on_commit_callbacks(execute=True):
        preview = purge.preview_purge(action="delete",
                                      database=lucia, kind="prefix", value=b"lucia:session:gone-", actor=operator)
        run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="stale test data",
                                  actor=operator)
        result = purge.execute_purge(run_id=run.pk, source="cli")
    assert result.done == 20
    with django_capture_on_commit_callbacks(execute=True):
        preview = purge.preview_purge(action="delete",
                                      database=lucia, kind="prefix", value=b"lucia:focus:", actor=operator)
        run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="second",
                                  actor=operator)
        purge.fail_purge(run_id=run.pk, error="Redis is unreachable.")
    assert _events(receiver) == ["purge.finished", "purge.failed"]
    finished, failed = (r["json"] for r in receiver.requests)
    assert "20 deleted" in finished["title"]
    assert finished["text"] == f"Purge #{result.run.pk} (delete) on lucia succeeded: matched 20, deleted 20, skipped 0."
    assert finished["link"].endswith(result.run.get_absolute_url())
    # Only id, database, action, status, counts and link: no reason, target or error text.
    assert failed["severity"] == "critical" and failed["text"].startswith(f"Purge #{run.pk} (delete) on lucia failed:")
    for payload in (finished, failed):
        assert "stale test data" not in str(payload) and "second" not in str(payload)
        assert "lucia:session:" not in str(payload) and "Redis is unreachable." not in str(payload)


def test_the_ttl_review_command_alerts_like_the_task(lucia, hook, monitored, settings,
                                                      django_capture_on_commit_callbacks):
    from io import StringIO

    from django.core.management import call_command

    from dashboard.models import AlertDelivery

    settings.ALERT_REVIEW_FINDINGS_THRESHOLD = 2
    monitored.set("lucia:session:no-ttl-1", "x")
    monitored.set("lucia:session:no-ttl-2", "x")
    monitored.set("lucia:session:fine", "x", ex=1800)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("ttl_review", "--database", "lucia", stdout=StringIO())
    delivery = AlertDelivery.objects.get()
    run = ReviewRun.objects.get()
    assert run.status == ReviewRun.SUCCEEDED and run.triggered_by == ReviewRun.CLI
    assert (delivery.event, delivery.status, delivery.channel) == ("review.findings", AlertDelivery.QUEUED, hook)
    assert "2 findings" in delivery.title and f"/keyspace/jobs/reviews/{run.pk}/" in delivery.link
    assert len(callbacks) == 1  # its delivery task, enqueued on commit


def test_the_ttl_review_command_sends_nothing_below_the_threshold(lucia, hook, monitored, settings):
    from io import StringIO

    from django.core.management import call_command

    from dashboard.models import AlertDelivery

    settings.ALERT_REVIEW_FINDINGS_THRESHOLD = 2
    monitored.set("lucia:session:no-ttl-1", "x")
    call_command("ttl_review", "--database", "lucia", stdout=StringIO())
    assert ReviewRun.objects.get().total_findings == 1 and not AlertDelivery.objects.exists()


def test_a_sampled_review_alerts_on_its_estimate_and_says_it_is_sampled(lucia, hook, receiver, eager, settings,
                                                                        django_capture_on_commit_callbacks):
    settings.ALERT_REVIEW_FINDINGS_THRESHOLD = 100
    # 3 findings among 2,000 sampled keys of 100,000: about 150 in the keyspace.
    run = ReviewRun.objects.create(database=lucia, status=ReviewRun.SUCCEEDED, findings={"no_ttl": 3},
                                   finished_at=timezone.now(), sampled=True, sample_size=2000, keys_scanned=2000,
                                   dbsize_before=100_000)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerting.alert_on_review(run) == "review.findings"
    title = receiver.requests[0]["json"]["title"]
    assert "(sampled: estimated)" in title and "150 findings" in title

