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
