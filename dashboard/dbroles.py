"""The two Postgres roles the dashboard runs with (README, "Database roles").

- The **owner** role owns the database and its tables and runs `manage.py migrate`.
- The **app** role runs the web process, the worker and beat: it reads and writes the
  records, but may only SELECT and INSERT on the audit log and the rotation history (see
  migration dashboard/0005), and, not being their owner nor a superuser, cannot ALTER,
  TRUNCATE or DISABLE TRIGGER them, nor `SET session_replication_role`.

`make run` and the test harness create both roles with the statements below, the same
statements the README gives for production (a test keeps the two in step).
"""

OWNER = "dashboard_owner"
APP = "dashboard_app"


def cluster_statements(*, database="dashboard", owner=OWNER, app=APP, passwords=True, createdb=False):
    """Run once as a superuser (or a role with CREATEROLE and CREATEDB)."""
    password = " PASSWORD '…'" if passwords else ""
    return [
        f"CREATE ROLE {owner} LOGIN{' CREATEDB' if createdb else ''}{password}",
        f"CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE{password}",
        f"CREATE DATABASE {database} OWNER {owner}",
    ]


def database_statements(*, database="dashboard", owner=OWNER, app=APP):
    """Run once inside the new database, as a superuser or the owner, before migrating."""
    return [
        f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {app}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    ]
