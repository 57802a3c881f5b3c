"""The keyspace-side configuration operations called directly (not through a view): each
makes its change and writes its audit row together; a failure inside the transaction
leaves neither."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import DataError
from django_celery_beat.models import PeriodicTask

from continuity.forms import NamespaceForm, ScheduleForm
from continuity.models import Namespace
from continuity.operations import configuration
from dashboard.models import AuditEntry

# AuditEntry.source holds 16 characters: a longer one makes the audit INSERT itself fail,
# after the change was written in the same transaction.
FAILING_SOURCE = "x" * 17


def _namespace_form(ns, database, **changes):
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": ns.purpose, "expected_type": ns.expected_type,
            "min_ttl_seconds": ns.min_ttl_seconds or "", "max_ttl_seconds": ns.max_ttl_seconds or "",
            "ttl_required": "on" if ns.ttl_required else "", "max_payload_bytes": ns.max_payload_bytes or "",
            "fallback_note": ns.fallback_note, "violation_action": ns.violation_action}
    data.update(changes)
    form = NamespaceForm(data, instance=ns, database=database)
    assert form.is_valid(), form.errors
    return form


def test_it_updates_a_namespace_with_its_audit_row(lucia, operator):
    ns = Namespace.objects.get(database=lucia, name="session")
    saved = configuration.save_namespace(form=_namespace_form(ns, lucia, max_ttl_seconds=7200), actor=operator,
                                         source="cli")
    ns.refresh_from_db()
    assert saved.pk == ns.pk and ns.max_ttl_seconds == 7200
    entry = AuditEntry.objects.get(action="namespace.update")
    # `before` is the stored row, not the form's instance (which already holds 7200).
    assert entry.before["max_ttl_seconds"] == 3600 and entry.after["max_ttl_seconds"] == 7200
    assert entry.actor == operator and entry.source == "cli" and entry.target_id == str(ns.pk)


def test_it_creates_a_namespace_with_its_audit_row(lucia, operator):
    fresh = Namespace(database=lucia)
    form = _namespace_form(fresh, lucia, name="legacy", prefix="lucia:legacy:", max_ttl_seconds=600,
                           max_payload_bytes=1024, violation_action="report")
    created = configuration.save_namespace(form=form, actor=operator)
    entry = AuditEntry.objects.get(action="namespace.create")
    assert entry.target_id == str(created.pk) and entry.before is None
    assert entry.after["prefix"] == "lucia:legacy:" and entry.after["max_ttl_seconds"] == 600


def test_it_refuses_a_namespace_change_by_a_viewer(lucia, viewer):
    ns = Namespace.objects.get(database=lucia, name="session")
    with pytest.raises(PermissionDenied):
        configuration.save_namespace(form=_namespace_form(ns, lucia, max_ttl_seconds=7200), actor=viewer)
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 3600 and not AuditEntry.objects.filter(action="namespace.update").exists()


def test_it_updates_a_schedule_with_its_audit_row(lucia, admin):
    task = PeriodicTask.objects.get(name="ttl review")
    form = ScheduleForm.for_task(task, data={"kind": "crontab", "enabled": "on", "minute": "*/10", "hour": "3"})
    assert form.is_valid(), form.errors
    configuration.update_schedule(task=task, **form.schedule(), actor=admin)
    task.refresh_from_db()
    assert task.enabled and task.interval is None and (task.crontab.minute, task.crontab.hour) == ("*/10", "3")
    entry = AuditEntry.objects.get(action="schedule.update")
    assert entry.target_label == "ttl review" and entry.actor == admin
    assert entry.before == {"enabled": True, "interval": "every 15 minutes", "crontab": None}
    assert entry.after["interval"] is None and entry.after["crontab"].startswith("*/10 3 ")


def test_it_refuses_a_schedule_change_by_an_operator(lucia, operator):
    task = PeriodicTask.objects.get(name="ttl review")
    with pytest.raises(PermissionDenied):
        configuration.update_schedule(task=task, enabled=False, interval=(1, "minutes"), actor=operator)
    task.refresh_from_db()
    assert task.enabled and task.interval.every == 15 and not AuditEntry.objects.filter(action="schedule.update").exists()


def test_a_failed_namespace_save_leaves_neither_change_nor_audit_row(lucia, operator):
    ns = Namespace.objects.get(database=lucia, name="session")
    with pytest.raises(DataError):
        configuration.save_namespace(form=_namespace_form(ns, lucia, max_ttl_seconds=7200), actor=operator,
                                     source=FAILING_SOURCE)
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 3600 and not AuditEntry.objects.filter(action="namespace.update").exists()


def test_a_failed_schedule_update_leaves_neither_change_nor_audit_row(lucia, admin):
    task = PeriodicTask.objects.get(name="ttl review")
    with pytest.raises(DataError):
        configuration.update_schedule(task=task, enabled=False, interval=(2, "hours"), actor=admin,
                                      source=FAILING_SOURCE)
    task = PeriodicTask.objects.get(pk=task.pk)
    assert task.enabled and str(task.interval) == "every 15 minutes"
    assert not AuditEntry.objects.filter(action="schedule.update").exists()
