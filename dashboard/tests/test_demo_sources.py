"""`make run`'s demo of the sources of truth: the local Connect (spec 1.7.1) and Developer API
(openapi.yml 1.0.0) stand-ins with the demo's vault and database, the demo's records, and one
check; then the pages show a renamed item, a changed item, a region drift and Upstash's count."""

import io

import pytest
from django.core.management import call_command

from dashboard.devtools import demo_sources, devrun, sourceservers
from dashboard.models import AuditEntry, Rotation


@pytest.fixture
def demo(monkeypatch, no_sources, lucia):
    env = {}
    servers = devrun.demo_sources(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield servers
    for server in servers.values():
        server.stop()


def _text(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_the_demo_shows_each_state_the_issue_names(demo, viewer_client):
    assert demo_sources.main() == 0
    call_command("check_sources", stdout=io.StringIO())  # every source answered: no CommandError
    assert 'data-state="broken"' in _text(viewer_client, "/secrets/lucia-redis-password/")  # the renamed item
    changed = _text(viewer_client, "/secrets/lucia-rest-token/")
    assert 'data-state="changed"' in changed and "(version 4)" in changed
    assert 'data-state="checked"' in _text(viewer_client, "/secrets/lucia-rest-url/")
    database = _text(viewer_client, "/databases/lucia/")
    assert 'data-field="region"' in database and database.count('data-testid="drift-row"') == 1
    jobs = _text(viewer_client, "/keyspace/jobs/")
    assert "128,400" in jobs and "dashboard jobs: 0.0 % of this month's commands" in jobs
    # The stand-ins were asked only what the dashboard may ask.
    assert not [p for p in demo["1password"].paths() if "/items/" in p]
    assert "/v2/redis/databases" not in demo["upstash"].paths()


def test_the_demo_records_are_written_once(demo):
    demo_sources.main()
    entries, rotations = AuditEntry.objects.count(), Rotation.objects.count()
    demo_sources.main()
    assert (AuditEntry.objects.count(), Rotation.objects.count()) == (entries, rotations) == (entries, 2)


def test_a_configured_source_gets_no_stand_in():
    env = {"OP_CONNECT_HOST": "https://connect.example.test", "OP_CONNECT_TOKEN": "theirs"}
    servers = devrun.demo_sources(env)
    try:
        assert servers["1password"] is None and isinstance(servers["upstash"], sourceservers.LocalUpstash)
        assert env["OP_CONNECT_HOST"] == "https://connect.example.test" and env["UPSTASH_API_URL"] == servers["upstash"].url
    finally:
        servers["upstash"].stop()
