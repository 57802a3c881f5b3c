"""Postgres itself refuses UPDATE and DELETE on the rotation history."""

from django.db import migrations

CREATE = """
CREATE FUNCTION dashboard_rotation_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'rotation history is append-only: % refused on dashboard_rotation', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER dashboard_rotation_append_only
    BEFORE UPDATE OR DELETE ON dashboard_rotation
    FOR EACH ROW EXECUTE FUNCTION dashboard_rotation_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS dashboard_rotation_append_only ON dashboard_rotation;
DROP FUNCTION IF EXISTS dashboard_rotation_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0003_records_secrets_rotations_alerts")]

    operations = [migrations.RunSQL(CREATE, DROP)]
