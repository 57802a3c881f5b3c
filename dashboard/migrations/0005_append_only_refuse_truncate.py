"""The audit log and rotation history refuse TRUNCATE, and only their owner keeps UPDATE,
DELETE or TRUNCATE rights on them.

The row triggers of 0002/0004 do not fire on TRUNCATE. This statement trigger refuses it for
every role but the tables' owner: the owner (migrations, and a test run's flush) could drop
the trigger anyway, and the app role is never the owner (README, "Database roles"). The
REVOKE removes whatever the owner's default privileges granted the app role on these two
tables, so it is left with SELECT and INSERT.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION dashboard_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER dashboard_auditentry_refuse_truncate
    BEFORE TRUNCATE ON dashboard_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_refuse_truncate();
CREATE TRIGGER dashboard_rotation_refuse_truncate
    BEFORE TRUNCATE ON dashboard_rotation
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_refuse_truncate();

DO $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT c.relname,
               CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END AS grantee
        FROM pg_class c, aclexplode(c.relacl) acl
        WHERE c.oid IN ('dashboard_auditentry'::regclass, 'dashboard_rotation'::regclass)
          AND acl.grantee <> c.relowner
          AND acl.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES')
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON %I FROM %s',
                       grant_row.relname, grant_row.grantee);
    END LOOP;
END
$$;
"""

DROP = """
DROP TRIGGER IF EXISTS dashboard_auditentry_refuse_truncate ON dashboard_auditentry;
DROP TRIGGER IF EXISTS dashboard_rotation_refuse_truncate ON dashboard_rotation;
DROP FUNCTION IF EXISTS dashboard_refuse_truncate();
"""


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0004_rotation_append_only")]

    operations = [migrations.RunSQL(CREATE, DROP)]
