"""/metrics for Prometheus: the records' and the keyspace's collectors, and Celery's queue.

Every figure is computed when Prometheus scrapes, from Postgres (and a PING or LLEN for the
Redis servers): the collectors keep no state between scrapes. That is why gunicorn's worker
processes need nothing special. prometheus_client's counters and histograms live in the memory
of the process that increments them; under gunicorn each scrape reaches one worker at random,
so in-process metrics would jump between workers' figures unless every worker wrote them to
files (PROMETHEUS_MULTIPROC_DIR, multiprocess mode: a directory to manage and wipe at each
start, no custom collectors, gauges needing a merge mode). Here the source of truth is the
database every worker shares, so any worker gives the same answer. The registry is our own,
not prometheus_client's default one: its process and GC metrics would describe whichever
worker answered.

Access is never anonymous: a bearer token (METRICS_TOKEN, or METRICS_TOKEN_FILE) or a client
address in METRICS_ALLOWED_NETWORKS. With neither set, /metrics refuses everyone.
"""

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from continuity import keyspace
from continuity.metrics import KeyspaceCollector
from dashboard.lockout import client_ip
from dashboard.metrics import RecordsCollector


class CeleryQueueCollector:
    """Tasks waiting in the Celery broker's queue (LLEN), and whether the broker answered."""

    def collect(self):
        from dashboard.celery import app

        queue = app.conf.task_default_queue or "celery"
        up = GaugeMetricFamily("dashboard_celery_broker_up", "1 when the Celery broker answers.")
        length = GaugeMetricFamily("dashboard_celery_queue_length", "Tasks waiting in the Celery queue.",
                                   labels=["queue"])
        client = keyspace.make_client(settings.CELERY_BROKER_URL)
        try:
            length.add_metric([queue], client.llen(queue))
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a down broker is a figure, not a failed scrape
            up.add_metric([], 0)
        finally:
            client.close()
        yield up
        yield length

    def describe(self):
        return []


registry = CollectorRegistry(auto_describe=False)
for collector in (RecordsCollector(), KeyspaceCollector(), CeleryQueueCollector()):
    registry.register(collector)


def allowed(request):
    """True when the request carries METRICS_TOKEN as a bearer token, or comes from an address
    in METRICS_ALLOWED_NETWORKS (the client address as the login lockout reads it, proxies
    counted: DJANGO_PROXY_COUNT)."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    if settings.METRICS_ALLOWED_NETWORKS:
        try:
            address = ipaddress.ip_address(client_ip(request) or "")
        except ValueError:
            return False
        return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)
    return False


@login_not_required
@require_GET
@never_cache
def metrics(request):
    """The Prometheus text format, for a scraper with the token or from an allowed network."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOWED_NETWORKS:
        return HttpResponse("Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS.\n",
                            status=403, content_type="text/plain")
    if not allowed(request):
        response = HttpResponse("A bearer token (METRICS_TOKEN) or an allowed network is required.\n",
                                status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = generate_latest(registry)
    except DatabaseError:
        return HttpResponse("Postgres is unavailable: no metrics.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
