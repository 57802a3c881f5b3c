"""The upgrade to per-node purges (continuity 0015) on a database holding purges of every
status: the unfinished ones end with a reason that says what to do, the finished ones keep
theirs. Run through Django's migration executor on the test database, back to 0014 and
forward again, as the owner role (the one `migrate` runs as)."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from dashboard import dbroles

BEFORE = [("continuity", "0014_cluster_review_samples")]
AFTER = [("continuity", "0015_purge_per_node")]


def _as(role):
    connection.close()
    connection.settings_dict["USER"] = role


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def at_0014(transactional_db):
    _as(dbroles.OWNER)
    try:
        yield _migrate(BEFORE)
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    finally:
        _as(dbroles.APP)


@pytest.mark.django_db(transaction=True)
def test_it_stops_every_unfinished_purge_and_keeps_finished_ones(at_0014):
    from dashboard.models import RedisDatabase

    PurgeRun = at_0014.get_model("continuity", "PurgeRun")
    # One queued or running purge per database: a database per status.
    databases = {status: RedisDatabase.objects.create(name=f"old-{status}", url_env=f"OLD_{status.upper()}_URL")
                 for status in ("previewing", "previewed", "queued", "running", "succeeded", "failed", "cancelled")}
    statuses = ("previewing", "previewed", "queued", "running", "succeeded", "failed", "cancelled")
    runs = {status: PurgeRun.objects.create(database_id=databases[status].pk, target_kind="prefix", target_value="lucia:session:",
                                            match_pattern="lucia:session:*", status=status, done=7,
                                            error="its own" if status == "failed" else "")
            for status in statuses}

    apps = _migrate(AFTER)
    PurgeRun = apps.get_model("continuity", "PurgeRun")
    after = {status: PurgeRun.objects.get(pk=run.pk) for status, run in runs.items()}

    assert {status: run.status for status, run in after.items()} == {
        "previewing": "cancelled", "previewed": "cancelled", "queued": "failed", "running": "failed",
        "succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}
    for status in ("previewing", "previewed", "queued", "running"):
        assert after[status].error.startswith("Stopped by the upgrade to per-node purges")
        assert "Preview the purge again" in after[status].error
        assert after[status].finished_at is not None
        assert after[status].done == 7  # what it did stands
    assert after["failed"].error == "its own"
    assert after["succeeded"].error == "" and after["cancelled"].error == ""
    assert RedisDatabase.objects.filter(name__startswith="old-").count() == 7
