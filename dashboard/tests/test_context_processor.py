"""The navigation context: full pages check every monitored Redis for the banner; htmx fragments
(the 1-second progress polls) cost no query and no Redis command for it."""

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from continuity import keyspace
from continuity.models import PurgeRun
from continuity.operations import purge

DATABASES_QUERY = 'FROM "dashboard_redisdatabase"'


@pytest.fixture
def running(lucia, operator, monitored):
    run = purge.preview_purge(action="delete",
                              database=lucia, kind="prefix", value=b"lucia:session:", actor=operator).run
    PurgeRun.objects.filter(pk=run.pk).update(status=PurgeRun.RUNNING)
    return run


def _pings(server):
    stats = server.info("commandstats")
    return stats.get("cmdstat_ping", {}).get("calls", 0)


def _get(client, url, redis_server, **headers):
    """GET `url` with no remembered ping; return (body, pings sent, queries on RedisDatabase alone)."""
    server = redis.Redis.from_url(redis_server.url(0))
    keyspace.forget_cached_status()
    server.config_resetstat()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **headers)
    assert response.status_code == 200
    pings = _pings(server)
    server.close()
    return response.content.decode(), pings, [q["sql"] for q in queries if DATABASES_QUERY in q["sql"]]


def test_a_polled_fragment_costs_no_query_and_no_ping_for_the_banner(operator_client, running, redis_server):
    url = reverse("continuity:purge_progress", args=[running.pk])
    body, pings, queries = _get(operator_client, url, redis_server, HTTP_HX_REQUEST="true")
    assert "<html" not in body and pings == 0 and queries == []
    assert 'data-testid="cancel-button"' in body  # the role flags are still there

    body, pings, queries = _get(operator_client, url, redis_server)
    assert "<html" in body and pings == 1 and len(queries) == 1  # the full page checks the database


def test_a_boosted_request_renders_the_whole_page_with_its_banner_check(operator_client, running, redis_server):
    url = reverse("continuity:purge_detail", args=[running.pk])
    body, pings, queries = _get(operator_client, url, redis_server, HTTP_HX_REQUEST="true", HTTP_HX_BOOSTED="true")
    assert pings == 1 and len(queries) == 1 and 'data-testid="whoami"' in body
