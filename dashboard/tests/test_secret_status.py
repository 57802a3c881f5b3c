from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import transaction
from django.db.utils import DatabaseError

from dashboard.models import Rotation, Secret

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=dt_timezone.utc)


def _secret(**kwargs):
    return Secret.objects.create(name=kwargs.pop("name", "tok"), rotation_interval_days=90, due_soon_days=14, **kwargs)


@pytest.mark.parametrize("rotated_days_ago,status", [
    (None, "never_rotated"), (0, "ok"), (75, "ok"), (76, "due_soon"), (89, "due_soon"), (90, "overdue"), (400, "overdue"),
])
def test_it_computes_status_from_the_policy(db, rotated_days_ago, status):
    secret = _secret(last_rotated=None if rotated_days_ago is None else NOW - timedelta(days=rotated_days_ago))
    assert secret.rotation_status(NOW) == status


def test_it_treats_an_exposed_secret_as_due_now_until_rotated_again(db):
    secret = _secret(last_rotated=NOW - timedelta(days=1), exposed_at=NOW - timedelta(hours=1))
    assert secret.rotation_status(NOW) == "exposed"
    assert secret.next_due() == secret.exposed_at
    secret.last_rotated = NOW
    assert secret.rotation_status(NOW) == "ok"
    assert secret.next_due() == NOW + timedelta(days=90)


def test_it_sorts_by_next_due_and_age_in_postgres(db):
    _secret(name="young", last_rotated=NOW - timedelta(days=1))
    _secret(name="old", last_rotated=NOW - timedelta(days=80))
    Secret.objects.create(name="short", rotation_interval_days=7, last_rotated=NOW - timedelta(days=3))
    _secret(name="never")
    assert [s.name for s in Secret.objects.sorted_by("next_due")] == ["never", "short", "old", "young"]
    assert [s.name for s in Secret.objects.sorted_by("age")] == ["never", "old", "short", "young"]
    assert [s.name for s in Secret.objects.sorted_by("-age")] == ["young", "short", "old", "never"]
    assert Secret.objects.with_next_due().get(name="old").next_due_at == NOW + timedelta(days=10)


def test_it_stores_the_parsed_reference_parts(db):
    secret = _secret(reference="op://Lucia/Upstash Redis/REST/token?attribute=otp")
    secret.refresh_from_db()
    assert (secret.ref_vault, secret.ref_item, secret.ref_section, secret.ref_field, secret.ref_attribute) == (
        "Lucia", "Upstash Redis", "REST", "token", "otp")


def test_it_keeps_rotation_history_append_only(db, operator):
    secret = _secret()
    rotation = Rotation.objects.create(secret=secret, recorded_by=operator, recorded_by_label="otto",
                                       verified_how="ping", reference="op://a/b/c")
    with pytest.raises(DatabaseError, match="permission denied for table"):
        with transaction.atomic():
            Rotation.objects.filter(pk=rotation.pk).update(note="changed")
    with pytest.raises(DatabaseError, match="permission denied for table"):
        with transaction.atomic():
            Rotation.objects.filter(pk=rotation.pk).delete()
    assert Rotation.objects.get(pk=rotation.pk).note == ""
