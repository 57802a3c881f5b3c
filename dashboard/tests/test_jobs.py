"""Enqueueing a task by name (`dashboard.jobs`): after commit only, eagerly in tests, and found
in a process that never imported the tasks module."""

import json
import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings
from django.db import transaction

from dashboard import alerts, jobs
from dashboard.models import AlertChannel, AlertDelivery


@pytest.fixture
def hook(db, receiver):
    return AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))


def test_it_delivers_an_alert_when_the_transaction_commits(hook, receiver, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert alerts.notify(event="test.event", title="t", text="x") == 1
        assert receiver.requests == []  # nothing goes out before the commit
    assert len(callbacks) == 1
    assert [r["json"]["event"] for r in receiver.requests] == ["test.event"]
    assert AlertDelivery.objects.get().status == AlertDelivery.SENT


def test_it_queues_nothing_when_the_transaction_rolls_back(hook, receiver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                alerts.notify(event="test.event", title="t", text="x")
                raise RuntimeError("the change failed")
        except RuntimeError:
            pass
    assert callbacks == [] and receiver.requests == [] and not AlertDelivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_named_task_to_the_broker():
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    try:
        with transaction.atomic():
            jobs.enqueue_on_commit(alerts.DELIVER_TASK, 42)
            assert broker.llen("celery") == 0
        messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
        assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [("dashboard.deliver_alert",
                                                                                          "(42,)")]
    finally:
        broker.delete("celery")
        broker.close()


def test_it_finds_a_task_in_a_process_that_never_imported_its_module():
    script = ("import sys, django; django.setup(); from dashboard import jobs; "
              "assert 'dashboard.tasks' not in sys.modules and 'continuity.tasks' not in sys.modules; "
              "print(jobs.task('dashboard.deliver_alert').name, jobs.task('continuity.review_database').name)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["dashboard.deliver_alert", "continuity.review_database"]
