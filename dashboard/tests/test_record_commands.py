import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dashboard.models import AccountAccess, AuditEntry, ChecklistItem, EnvVar, PhaseMapping, RedisDatabase, Rotation, Secret

PASTED = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"


def _run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_prints_rotation_status_as_json_and_table(lucia):
    Secret.objects.filter(name="lucia-rest-token").update(last_rotated=timezone.now() - timedelta(days=100))
    rows = {row["name"]: row for row in json.loads(_run("rotation_status", "--json"))}
    assert set(rows) == {"lucia-rest-url", "lucia-rest-token", "lucia-redis-password"}
    assert rows["lucia-rest-token"]["status"] == "overdue" and rows["lucia-rest-token"]["next_due"]
    assert rows["lucia-rest-url"] == {"name": "lucia-rest-url", "status": "never_rotated", "last_rotated": None,
                                      "next_due": None}
    table = _run("rotation_status")
    assert "lucia-rest-token" in table and "overdue" in table and "NEXT DUE" in table


def test_it_records_a_rotation_from_the_command_line_with_audit(lucia, operator):
    out = _run("record_rotation", "--secret", "lucia-rest-token", "--reference", "op://Lucia/Upstash/token",
               "--note", "scripted", "--by", "otto")
    assert "never_rotated -> ok" in out
    rotation = Rotation.objects.get()
    assert rotation.source == "cli" and rotation.recorded_by == operator and rotation.note == "scripted"
    entry = AuditEntry.objects.get(action="secret.rotate")
    assert entry.source == "cli" and entry.actor_label == "otto" and entry.after["reference"] == "op://Lucia/Upstash/token"
    assert Secret.objects.get(name="lucia-rest-token").rotation_status() == "ok"


@pytest.mark.parametrize("args,message", [
    (["--secret", "nope", "--reference", "op://a/b/c", "--by", "otto"], "No secret named"),
    (["--secret", "lucia-rest-token", "--reference", PASTED, "--by", "otto"], "Refused, nothing written"),
    (["--secret", "lucia-rest-token", "--reference", "op://a/b/c", "--note", f"old {PASTED}", "--by", "otto"], "looks like a secret"),
    (["--secret", "lucia-rest-token", "--reference", "op://a/b/c", "--by", "vera"], "needs the operator role"),
    (["--secret", "lucia-rest-token", "--reference", "op://a/b/c", "--by", "ghost"], "No user named"),
])
def test_it_refuses_bad_rotations_writing_nothing(lucia, operator, viewer, caplog, args, message):
    caplog.set_level(logging.DEBUG)
    audit_before = AuditEntry.objects.count()
    with pytest.raises(CommandError) as caught:
        call_command("record_rotation", *args, stdout=StringIO())
    assert message in str(caught.value) and PASTED not in str(caught.value) and PASTED not in caplog.text
    assert not Rotation.objects.exists() and AuditEntry.objects.count() == audit_before
    assert Secret.objects.get(name="lucia-rest-token").last_rotated is None


@pytest.mark.django_db(transaction=True)
def test_it_exits_non_zero_on_refusal_and_zero_on_success(operator):
    """Through manage.py in a real process, against the test database."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    from continuity import seed

    seed.seed_all()
    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    base = [sys.executable, "manage.py", "record_rotation", "--secret", "lucia-rest-token", "--by", "otto"]
    refused = subprocess.run([*base, "--reference", PASTED], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "Refused, nothing written" in refused.stderr and PASTED not in refused.stderr + refused.stdout
    assert not Rotation.objects.exists()
    done = subprocess.run([*base, "--reference", "op://Lucia/Upstash/token"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert Rotation.objects.get().recorded_by == operator


def test_it_seeds_idempotently_without_overwriting_edits(db):
    from continuity import seed
    from django_celery_beat.models import PeriodicTask

    first = seed.seed_all()
    assert first["secrets"] == 3 and first["env vars"] == 4 and first["checklist items"] == 12
    assert first["phases"] == 2 and first["accounts"] == 1
    assert first["schedules"] == PeriodicTask.objects.count()
    assert {"rotation check", "ttl review"} <= set(PeriodicTask.objects.values_list("name", flat=True))
    assert set(EnvVar.objects.values_list("name", flat=True)) == {
        "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "REDIS_URL", "REDIS_TOKEN"}
    assert EnvVar.objects.get(name="UPSTASH_REDIS_REST_TOKEN").secret.name == "lucia-rest-token"
    assert [s["total"] for s in ChecklistItem.objects.stages()] == [4, 5, 3]
    task = PeriodicTask.objects.get(name="rotation check")
    assert task.task == "dashboard.check_rotations" and task.crontab.hour == "7"
    database = RedisDatabase.objects.get(name="lucia")
    assert database.alerting_path and database.expiry_fallback
    # operator edits
    Secret.objects.filter(name="lucia-rest-token").update(rotation_interval_days=30)
    RedisDatabase.objects.filter(name="lucia").update(alerting_path="PagerDuty", if_down="")
    task.enabled = False
    task.save()
    audit_count = AuditEntry.objects.count()

    again = seed.seed_all()
    assert again["secrets"] == again["env vars"] == again["checklist items"] == again["schedules"] == 0
    assert Secret.objects.get(name="lucia-rest-token").rotation_interval_days == 30
    database.refresh_from_db()
    assert database.alerting_path == "PagerDuty"  # kept
    assert database.if_down  # a blank failure-plan field is filled
    assert PeriodicTask.objects.get(name="rotation check").enabled is False
    assert AuditEntry.objects.count() == audit_count + 1  # only the failure-plan fill
    assert seed.seed_all()["failure plans"] == 0
    assert AccountAccess.objects.count() == 1 and PhaseMapping.objects.count() == 2


def test_it_runs_seed_runbook_command(db):
    out = _run("seed_runbook")
    assert "3 secrets" in out and "4 env vars" in out and "1 accounts" in out and "True" not in out
    again = _run("seed_runbook")
    assert "0 secrets" in again and "0 accounts" in again
