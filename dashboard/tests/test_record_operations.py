"""The records-side operations called directly (not through a view): each makes its change
and writes its audit row together, and a failure inside the transaction leaves neither."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DataError

from dashboard import operations, roles
from dashboard.models import AlertChannel, AuditEntry, PhaseMapping
from dashboard.record_forms import AlertChannelForm, PhaseMappingForm

# AuditEntry.source holds 16 characters: a longer one makes the audit INSERT itself fail,
# after the change was written in the same transaction.
FAILING_SOURCE = "x" * 17


def _phase_form(instance=None, **changes):
    data = {"number": 7, "title": "Cut over", "primary_page": "08", "primary_page_url": "", "notes": ""}
    data.update(changes)
    form = PhaseMappingForm(data, instance=instance)
    assert form.is_valid(), form.errors
    return form


def test_it_saves_a_record_form_with_its_audit_row(operator):
    phase = operations.save_record(form=_phase_form(), action="phase.create", actor=operator, source="cli")
    created = AuditEntry.objects.get(action="phase.create")
    assert created.target_id == str(phase.pk) and created.before is None and created.after["title"] == "Cut over"
    assert created.actor == operator and created.source == "cli"

    operations.save_record(form=_phase_form(phase, title="Cut over, for real"), action="phase.edit", actor=operator)
    phase.refresh_from_db()
    assert phase.title == "Cut over, for real"
    edited = AuditEntry.objects.get(action="phase.edit")
    # `before` is the stored row, not the form's instance (which already holds the new title).
    assert edited.before["title"] == "Cut over" and edited.after["title"] == "Cut over, for real"


def test_it_refuses_a_record_save_by_a_viewer(viewer):
    with pytest.raises(PermissionDenied):
        operations.save_record(form=_phase_form(), action="phase.create", actor=viewer)
    assert not PhaseMapping.objects.exists() and not AuditEntry.objects.exists()


def test_it_creates_a_user_with_a_role_and_an_audit_row_without_the_password(admin):
    new = operations.create_user(username="carol", email="c@example.test", role=roles.OPERATOR, actor=admin)
    user = get_user_model().objects.get(username="carol")
    assert new.user == user and roles.role_of(user) == roles.OPERATOR and user.check_password(new.password)
    entry = AuditEntry.objects.get(action="user.create")
    assert entry.after == {"username": "carol", "email": "c@example.test", "role": "operator"}
    assert entry.actor == admin and new.password not in str(entry.after)


def test_it_changes_a_role_with_an_audit_row(admin, viewer):
    operations.change_user_role(user=viewer, role=roles.OPERATOR, is_active=False, actor=admin)
    viewer.refresh_from_db()
    assert not viewer.is_active
    entry = AuditEntry.objects.get(action="user.role")
    assert entry.before == {"role": "viewer", "is_active": True}
    assert entry.after == {"role": "operator", "is_active": False} and entry.actor == admin


def test_it_refuses_to_let_an_admin_demote_themselves(admin):
    with pytest.raises(ValidationError, match="cannot remove your own admin role"):
        operations.change_user_role(user=admin, role=roles.VIEWER, is_active=True, actor=admin)
    assert roles.role_of(admin) == roles.ADMIN and not AuditEntry.objects.exists()


def test_it_edits_an_alert_channel_auditing_the_old_and_new_masked_url(admin):
    channel = AlertChannel.objects.create(name="ops", kind="webhook", url="https://old.example.test/hook/s3cr3t")
    form = AlertChannelForm({"name": "ops", "kind": "webhook", "url": "https://new.example.test/hook/s3cr3t",
                             "enabled": "on"}, instance=channel)
    assert form.is_valid(), form.errors
    operations.save_alert_channel(form=form, actor=admin)
    channel.refresh_from_db()
    assert channel.url == "https://new.example.test/hook/s3cr3t"
    entry = AuditEntry.objects.get(action="alert_channel.edit")
    assert entry.before["url"] == "https://old.example.test/…" and entry.after["url"] == "https://new.example.test/…"
    assert "s3cr3t" not in str(entry.before) + str(entry.after)


def test_it_sends_a_test_alert_and_audits_the_outcome(admin, receiver):
    channel = AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))
    sent = operations.send_test_alert(channel=channel, actor=admin)
    assert sent.ok and sent.message == "Test alert delivered." and sent.channel.last_success_at is not None
    assert [r["json"]["event"] for r in receiver.requests] == ["test"]
    entry = AuditEntry.objects.get(action="alert_channel.test")
    assert entry.after == {"ok": True, "result": "Test alert delivered."} and entry.actor == admin


def _save_phase(admin):
    operations.save_record(form=_phase_form(), action="phase.create", actor=admin, source=FAILING_SOURCE)


def _create_user(admin):
    operations.create_user(username="carol", email="c@example.test", role=roles.VIEWER, actor=admin,
                           source=FAILING_SOURCE)


def _change_role(admin):
    other = get_user_model().objects.create_user("vic", "v@example.test", "pw-not-used-anywhere")
    roles.set_role(other, roles.VIEWER)
    operations.change_user_role(user=other, role=roles.OPERATOR, is_active=False, actor=admin, source=FAILING_SOURCE)


def _save_channel(admin):
    form = AlertChannelForm({"name": "ops", "kind": "webhook", "url": "https://example.test/hook"})
    assert form.is_valid(), form.errors
    operations.save_alert_channel(form=form, actor=admin, source=FAILING_SOURCE)


def _unchanged(admin):
    vic = get_user_model().objects.filter(username="vic").first()
    return (not PhaseMapping.objects.exists() and not get_user_model().objects.filter(username="carol").exists()
            and (vic is None or (vic.is_active and roles.role_of(vic) == roles.VIEWER))
            and not AlertChannel.objects.exists())


@pytest.mark.parametrize("operation", [_save_phase, _create_user, _change_role, _save_channel],
                         ids=["save_record", "create_user", "change_user_role", "save_alert_channel"])
def test_a_failure_inside_the_transaction_leaves_neither_change_nor_audit_row(admin, operation):
    with pytest.raises(DataError):
        operation(admin)
    assert _unchanged(admin)
    assert not AuditEntry.objects.exists()
