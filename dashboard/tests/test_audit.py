import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from dashboard import audit
from dashboard.models import AuditEntry, RedisDatabase


@pytest.fixture
def entry(db):
    with transaction.atomic():
        return audit.record(action="database.update", target_type="db", target_id="1", target_label="lucia",
                            before={"region": "eu-west-1"}, after={"region": "us-east-1"}, actor_label="seed")


def test_it_refuses_to_write_outside_a_transaction(transactional_db):
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        audit.record(action="x", actor_label="t")


def test_postgres_refuses_update_of_an_entry(entry):
    with pytest.raises(DatabaseError, match="permission denied for table"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(action="tampered")
    entry.refresh_from_db()
    assert entry.action == "database.update"


def test_postgres_refuses_delete_even_in_raw_sql(entry):
    with pytest.raises(DatabaseError, match="permission denied for table"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM dashboard_auditentry")
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_it_censors_sensitive_fields_and_passwords_in_urls():
    data = {"password": "hunter2", "token": "AXyz", "api_key": "k", "value": "v", "name": "REDIS_TOKEN",
            "url": "rediss://default:s3cret@eu1.upstash.io:6379", "secret_id": 4, "secret": 7, "client_secret": "cs", "empty_token": ""}
    censored = audit.censor(data)
    assert censored["password"] == censored["token"] == censored["api_key"] == censored["value"] == audit.CENSORED
    assert censored["url"] == f"rediss://default:{audit.CENSORED}@eu1.upstash.io:6379"
    assert censored["name"] == "REDIS_TOKEN" and censored["secret_id"] == 4 and censored["empty_token"] == ""
    assert censored["secret"] == 7 and censored["client_secret"] == audit.CENSORED
    assert "s3cret" not in str(censored)


def test_it_records_the_changes_between_before_and_after(entry):
    assert entry.changes() == [("region", "eu-west-1", "us-east-1")]


def test_the_audit_page_filters_by_actor_and_action(viewer_client, entry, django_assert_num_queries):
    with transaction.atomic():
        audit.record(action="user.create", target_label="carol", actor_label="ada")
    # session, user, user perms, group perms, count, page, databases (banner): constant in the number of rows
    with django_assert_num_queries(7):
        response = viewer_client.get(reverse("dashboard:audit_list"), {"actor": "ada"})
    body = response.content.decode()
    assert "user.create" in body and "database.update" not in body
    response = viewer_client.get(reverse("dashboard:audit_list"), {"action": "database."})
    body = response.content.decode()
    assert "database.update" in body and "user.create" not in body


def test_the_audit_page_serves_the_results_fragment_to_htmx(viewer_client, entry):
    response = viewer_client.get(reverse("dashboard:audit_list"), {"target": "lucia"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "<html" not in body and 'data-testid="audit-table"' in body and "lucia" in body
    assert response["Vary"].count("HX-Request") == 1


def test_the_detail_page_shows_before_and_after(viewer_client, entry):
    body = viewer_client.get(reverse("dashboard:audit_detail", args=[entry.pk])).content.decode()
    assert "eu-west-1" in body and "us-east-1" in body


def test_it_groups_the_entries_of_one_request(admin_client, viewer):
    response = admin_client.post(reverse("dashboard:user_role", args=[viewer.pk]),
                                 {"role": "operator", "is_active": "on"}, HTTP_X_REQUEST_ID="req-1234567890")
    entry = AuditEntry.objects.get(action="user.role")
    assert entry.request_id == response["X-Request-ID"] != "req-1234567890"  # the server's id, not the client's
    assert entry.client_request_id == "req-1234567890"


def test_it_refuses_to_delete_a_user_with_history(admin, entry):
    from django.db.models import ProtectedError

    with transaction.atomic():
        audit.record(action="user.create", actor=admin)
    with pytest.raises(ProtectedError):
        admin.delete()


def test_seeding_is_audited_and_idempotent(db):
    from django.core.management import call_command

    call_command("seed_runbook")
    first = AuditEntry.objects.filter(actor_label="seed_runbook").count()
    assert first >= 6
    call_command("seed_runbook")
    assert AuditEntry.objects.filter(actor_label="seed_runbook").count() == first
    assert RedisDatabase.objects.filter(name="lucia").count() == 1
