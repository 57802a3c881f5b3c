"""The models and the migrations agree, and every app's migrations form one line.

Branches that each add a migration are merged by renumbering one after the other; this
holds that merge to what Django itself would generate."""

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader


@pytest.mark.django_db
def test_the_models_need_no_new_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits 1 when a migration is missing
        pytest.fail(f"makemigrations --check found model changes without a migration (exit {exc.code}):\n"
                    f"{out.getvalue()}")


@pytest.mark.django_db
def test_each_app_has_one_leaf_migration():
    loader = MigrationLoader(connection)
    conflicts = loader.detect_conflicts()
    assert conflicts == {}, f"apps with more than one leaf migration: {conflicts}"
    for app in ("continuity", "dashboard"):
        assert len(loader.graph.leaf_nodes(app)) == 1


@pytest.mark.django_db(transaction=True)
def test_the_client_request_id_column_is_added_to_an_audit_log_that_holds_entries(admin):
    """dashboard 0009 adds a column to the append-only audit log: its SQL, run by the owner
    (as `migrate` is) on a table with committed entries, keeps every entry. Rolled back."""
    import psycopg
    from django.db import transaction

    from dashboard import audit, dbroles
    from dashboard.models import AuditEntry

    with transaction.atomic():
        audit.record(action="test.before_migration", actor=admin, note="kept")
    count = AuditEntry.objects.count()
    out = io.StringIO()
    call_command("sqlmigrate", "dashboard", "0009", stdout=out)
    forward = [line for line in out.getvalue().splitlines() if line.strip() and not line.startswith("--")
               and line.strip() not in ("BEGIN;", "COMMIT;")]
    assert any("ADD COLUMN" in line and "client_request_id" in line for line in forward)
    settings = connection.settings_dict
    with psycopg.connect(host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"],
                         user=dbroles.OWNER) as owner:
        try:
            owner.execute("ALTER TABLE dashboard_auditentry DROP COLUMN client_request_id")  # as before 0009
            for statement in forward:
                owner.execute(statement)
            rows = owner.execute("SELECT action, note, client_request_id FROM dashboard_auditentry "
                                 "ORDER BY id").fetchall()
        finally:
            owner.rollback()
    assert len(rows) == count and ("test.before_migration", "kept", "") in rows
