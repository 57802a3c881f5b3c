"""Postgres itself refuses UPDATE and DELETE on the audit log."""

from django.db import migrations

CREATE = """
CREATE FUNCTION dashboard_auditentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused on dashboard_auditentry', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER dashboard_auditentry_append_only
    BEFORE UPDATE OR DELETE ON dashboard_auditentry
    FOR EACH ROW EXECUTE FUNCTION dashboard_auditentry_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS dashboard_auditentry_append_only ON dashboard_auditentry;
DROP FUNCTION IF EXISTS dashboard_auditentry_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
