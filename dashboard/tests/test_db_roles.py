"""The audit log and rotation history are append-only against the app's own database user
(issue 11, item 5). The tests run as the restricted app role, like the dashboard itself."""

import re
from pathlib import Path

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from dashboard import audit, dbroles
from dashboard.models import AuditEntry, Rotation

ROOT = Path(__file__).resolve().parents[2]
TABLES = ["dashboard_auditentry", "dashboard_rotation"]


def _refused(sql):
    """Run `sql` as the app role inside a savepoint; the error Postgres answered."""
    with pytest.raises(DatabaseError) as error, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    return str(error.value)


@pytest.fixture
def rows(operator, lucia):
    """One audit entry and one rotation, written by the app code as the app role."""
    from dashboard.models import Secret
    from dashboard.operations import record_rotation

    record_rotation(secret=Secret.objects.first(), verified_how="PING from the worker",
                    reference="op://Lucia/upstash-redis/password", actor=operator)
    counts = (AuditEntry.objects.count(), Rotation.objects.count())
    assert counts[0] > 0 and counts[1] == 1
    return counts


def _owner_connection():
    settings = connection.settings_dict
    return psycopg.connect(host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"],
                           user=dbroles.OWNER, autocommit=True)


def test_the_app_runs_as_a_role_without_superuser_or_ownership(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls "
                       "FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (dbroles.APP, False, False, False, False)
        cursor.execute("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname = ANY(%s)", [TABLES])
        assert cursor.fetchall() == [(dbroles.OWNER,)]
        for table in TABLES:
            cursor.execute("SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, 'INSERT'), "
                           "has_table_privilege(%s, %s, 'UPDATE'), has_table_privilege(%s, %s, 'DELETE'), "
                           "has_table_privilege(%s, %s, 'TRUNCATE')", [dbroles.APP, table] * 5)
            assert cursor.fetchone() == (True, True, False, False, False), table
        # Normal rights elsewhere.
        cursor.execute("SELECT has_table_privilege(%s, 'dashboard_secret', 'UPDATE'), "
                       "has_table_privilege(%s, 'dashboard_secret', 'DELETE')", [dbroles.APP] * 2)
        assert cursor.fetchone() == (True, True)


@pytest.mark.parametrize("table", TABLES)
def test_the_app_role_cannot_truncate_alter_update_or_delete(rows, table):
    assert "permission denied" in _refused(f"TRUNCATE {table}")
    assert "must be owner" in _refused(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
    assert "must be owner" in _refused(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    assert "permission denied" in _refused(f"UPDATE {table} SET id = id")
    assert "permission denied" in _refused(f"DELETE FROM {table}")
    assert "must be owner" in _refused(f"DROP TABLE {table}")
    assert "permission denied" in _refused("SET session_replication_role = replica")
    assert (AuditEntry.objects.count(), Rotation.objects.count()) == rows


@pytest.mark.parametrize("table", TABLES)
def test_the_triggers_refuse_even_when_someone_grants_the_app_role_everything(transactional_db, rows, table):
    """A `GRANT ALL` by mistake: the triggers still refuse TRUNCATE, UPDATE and DELETE."""
    with _owner_connection() as owner:
        owner.execute(f"GRANT ALL ON {table} TO {dbroles.APP}")
        try:
            assert f"{table} is append-only: TRUNCATE refused" in _refused(f"TRUNCATE {table}")
            assert "append-only: UPDATE refused" in _refused(f"UPDATE {table} SET id = id")
            assert "append-only: DELETE refused" in _refused(f"DELETE FROM {table}")
            assert "must be owner" in _refused(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        finally:
            owner.execute(f"REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {table} FROM {dbroles.APP}")
    assert (AuditEntry.objects.count(), Rotation.objects.count()) == rows


def test_the_app_role_still_appends_and_reads(rows, operator, lucia):
    before = AuditEntry.objects.count()
    with transaction.atomic():
        audit.record(actor=operator, action="test.again", target=lucia, after={"n": 2})
    assert AuditEntry.objects.count() == before + 1
    assert AuditEntry.objects.latest("pk").action == "test.again"


def test_the_readme_gives_the_statements_the_harness_runs():
    readme = ROOT.joinpath("README.md").read_text()
    block = re.search(r"```sql\n(.*?)```", readme[readme.index("### Database roles"):], re.S).group(1)
    statements = [line.rstrip(";") for line in re.sub(r"\n\s+", " ", block).splitlines()
                  if line and not line.startswith(("--", "\\"))]
    expected = dbroles.cluster_statements() + dbroles.database_statements()
    assert statements == expected
