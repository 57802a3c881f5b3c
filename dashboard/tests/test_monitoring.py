"""/metrics: scraped through the real URL and parsed with prometheus_client's own parser,
after a real review of a real redis-server; its access rules; and the docs' alert rules and
Grafana dashboard checked against what it serves."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from continuity.models import KeyspaceCheck, ReviewRun
from continuity.operations import keyspace_watch, review
from dashboard.models import RedisDatabase, Secret

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
TOKEN = "metrics-test-token-0123456789abcdef"


@pytest.fixture
def scraper(settings, client):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []

    def scrape():
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return {family.name: family for family in text_string_to_metric_families(response.content.decode())}

    return scrape


def _value(families, name, sample_name=None, **labels):
    matches = [s.value for s in families[name].samples
               if s.name == (sample_name or name) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, families[name].samples)
    return matches[0]


@pytest.fixture
def planted(monitored, lucia):
    """Five keys with known findings: session a (TTL ok), session b (no TTL), rate x (TTL above
    the hour maximum), two in no namespace."""
    monitored.set("lucia:session:a", "1", ex=1200)
    monitored.set("lucia:session:b", "1")
    monitored.set("lucia:rate:x", "1", ex=7200)
    monitored.set("lucia:mystery:1", "1")
    monitored.set("lucia:mystery:2", "1", ex=60)
    return lucia


def test_it_serves_the_last_exact_review_per_namespace_with_its_age(scraper, planted):
    result = review.review_database(database=planted)
    assert result.run.status == ReviewRun.SUCCEEDED and not result.run.sampled
    families = scraper()
    row = {"database": "lucia", "review": "exact"}
    assert _value(families, "dashboard_review_keys", namespace="session", **row) == 2
    assert _value(families, "dashboard_review_keys", namespace="rate", **row) == 1
    assert _value(families, "dashboard_review_keys", namespace="(none)", **row) == 2
    assert _value(families, "dashboard_review_keys_without_ttl", namespace="session", **row) == 1
    assert _value(families, "dashboard_review_keys_without_ttl", namespace="(none)", **row) == 1
    assert _value(families, "dashboard_review_findings", namespace="session", finding="no_ttl", **row) == 1
    assert _value(families, "dashboard_review_findings", namespace="session", finding="ttl_above_max", **row) == 0
    assert _value(families, "dashboard_review_findings", namespace="rate", finding="ttl_above_max", **row) == 1
    assert _value(families, "dashboard_review_findings", namespace="(none)", finding="unknown_namespace", **row) == 2
    assert 0 <= _value(families, "dashboard_review_age_seconds", database="lucia", review="exact") < 60
    assert not [s for s in families["dashboard_review_age_seconds"].samples if s.labels["review"] == "sampled"]
    # Bounded labels: namespaces by their record's name, never a key or a prefix.
    namespaces = {s.labels["namespace"] for s in families["dashboard_review_keys"].samples}
    assert namespaces == {"session", "distress", "focus", "action", "rate", "(none)"}
    every_label = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not [v for v in every_label if "lucia:" in v or "mystery" in v]


def test_a_sampled_review_is_labelled_sampled_and_scaled_to_the_keyspace(scraper, monitored, lucia):
    monitored.mset({f"lucia:session:{n}": "1" for n in range(400)})
    result = review.review_database(database=lucia, sample=100)
    assert result.run.sampled and 0 < result.run.keys_scanned <= 100
    families = scraper()
    keys = _value(families, "dashboard_review_keys", database="lucia", namespace="session", review="sampled")
    no_ttl = _value(families, "dashboard_review_keys_without_ttl", database="lucia", namespace="session",
                    review="sampled")
    assert keys == no_ttl == 400  # every sampled key is a session key without TTL: scaled, exactly DBSIZE
    assert _value(families, "dashboard_review_findings", database="lucia", namespace="session", review="sampled",
                  finding="no_ttl") == 400


def test_it_counts_job_runs_durations_and_billed_commands_from_postgres(scraper, planted):
    first = review.review_database(database=planted).run
    ReviewRun.objects.create(database=planted, status=ReviewRun.FAILED, duration_s=2000, billed_commands=7)
    ReviewRun.objects.create(database=planted, status=ReviewRun.QUEUED, sampled=True)
    families = scraper()
    runs = "dashboard_job_runs"
    assert _value(families, runs, f"{runs}_total", kind="review_exact", database="lucia", outcome="succeeded") == 1
    assert _value(families, runs, f"{runs}_total", kind="review_exact", database="lucia", outcome="failed") == 1
    assert _value(families, "dashboard_jobs_active", kind="review_sampled", database="lucia", status="queued") == 1
    billed = "dashboard_job_billed_commands"
    assert first.billed_commands > 0
    assert _value(families, billed, f"{billed}_total", kind="review_exact", database="lucia") == first.billed_commands + 7
    durations = "dashboard_job_duration_seconds"
    assert _value(families, durations, f"{durations}_count", kind="review_exact") == 2
    assert _value(families, durations, f"{durations}_bucket", kind="review_exact", le="60.0") == 1
    assert _value(families, durations, f"{durations}_bucket", kind="review_exact", le="900.0") == 1
    assert _value(families, durations, f"{durations}_bucket", kind="review_exact", le="3600.0") == 2
    assert _value(families, durations, f"{durations}_bucket", kind="review_exact", le="+Inf") == 2
    assert _value(families, durations, f"{durations}_sum", kind="review_exact") == pytest.approx(
        first.duration_s + 2000)


def test_it_pings_each_monitored_redis_and_reads_the_celery_queue(scraper, lucia, redis_server, empty_broker):
    RedisDatabase.objects.create(name="ghost", url_env="GHOST_REDIS_URL")  # its variable is unset
    broker = redis.Redis.from_url(redis_server.url(1))
    broker.lpush("celery", "one", "two", "three")
    try:
        families = scraper()
    finally:
        broker.delete("celery")
        broker.close()
    assert _value(families, "dashboard_redis_up", database="lucia") == 1
    assert _value(families, "dashboard_redis_up", database="ghost") == 0
    assert 0 < _value(families, "dashboard_redis_rtt_seconds", database="lucia") < 1
    assert not [s for s in families["dashboard_redis_rtt_seconds"].samples if s.labels["database"] == "ghost"]
    assert _value(families, "dashboard_celery_queue_length", queue="celery") == 3
    assert _value(families, "dashboard_celery_broker_up") == 1


def test_it_serves_the_keyspace_watch_and_raises_the_loss_alarm_after_a_flush(scraper, planted, monitored):
    """A real keyspace watch of the five planted keys (two without a TTL), then FLUSHDB and a
    second look: the alarm's `keyspace.lost` goes from 0 to 1, `redis.restarted` stays 0."""
    first = keyspace_watch.check_database(planted)
    families = scraper()
    assert _value(families, "dashboard_keyspace_keys", database="lucia") == 5
    assert _value(families, "dashboard_keyspace_keys_without_ttl", database="lucia") == 2
    assert 0 <= _value(families, "dashboard_keyspace_check_age_seconds", database="lucia") < 60
    assert _value(families, "dashboard_keyspace_alarm", database="lucia", event="keyspace.lost") == 0
    assert _value(families, "dashboard_keyspace_alarm", database="lucia", event="redis.restarted") == 0
    monitored.flushdb()
    lost = keyspace_watch.check_database(planted, now=first.checked_at + timedelta(minutes=1))
    assert (lost.keys, lost.event) == (0, "keyspace.lost")
    families = scraper()
    assert _value(families, "dashboard_keyspace_keys", database="lucia") == 0
    assert _value(families, "dashboard_keyspace_alarm", database="lucia", event="keyspace.lost") == 1
    assert _value(families, "dashboard_keyspace_alarm", database="lucia", event="redis.restarted") == 0


def test_a_loss_older_than_a_day_no_longer_raises_the_alarm(scraper, planted, monitored):
    """The alarm stays up as long as the first screen shows the loss (24 h), and not one second more."""
    start = timezone.now() - timedelta(days=2)
    keyspace_watch.check_database(planted, now=start)
    monitored.flushdb()
    lost = keyspace_watch.check_database(planted, now=start + timedelta(minutes=1))
    assert lost.event == "keyspace.lost"
    families = scraper()
    assert _value(families, "dashboard_keyspace_alarm", database="lucia", event="keyspace.lost") == 0
    KeyspaceCheck.objects.filter(pk=lost.pk).update(checked_at=timezone.now() - timedelta(hours=23, minutes=59))
    assert _value(scraper(), "dashboard_keyspace_alarm", database="lucia", event="keyspace.lost") == 1


def test_it_counts_secrets_by_rotation_status(scraper, db):
    Secret.objects.all().delete()
    now = timezone.now()
    Secret.objects.create(name="fresh")
    Secret.objects.filter(name="fresh").update(last_rotated=now - timedelta(days=1))
    Secret.objects.create(name="stale", rotation_interval_days=30)
    Secret.objects.filter(name="stale").update(last_rotated=now - timedelta(days=31))
    Secret.objects.create(name="leaked")
    Secret.objects.filter(name="leaked").update(last_rotated=now - timedelta(days=2), exposed_at=now)
    Secret.objects.create(name="new-one")
    families = scraper()
    expected = {"ok": 1, "overdue": 1, "exposed": 1, "never_rotated": 1, "due_soon": 0}
    assert {s.labels["status"]: s.value for s in families["dashboard_secrets"].samples} == expected
    assert _value(families, "dashboard_secret_rotation_status", secret="stale", status="overdue") == 1
    due = _value(families, "dashboard_secret_next_rotation_timestamp_seconds", secret="fresh")
    assert due == pytest.approx((now + timedelta(days=89)).timestamp(), abs=5)


# --- access -----------------------------------------------------------------------------
def test_it_refuses_everyone_when_neither_a_token_nor_a_network_is_set(client, settings, db):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 403 and b"dashboard_" not in response.content


def test_it_never_answers_anonymously_or_to_a_wrong_token(client, settings, admin_client, db):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []
    for response in (client.get("/metrics"), client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x"),
                     client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}"),
                     admin_client.get("/metrics")):  # a signed-in admin is no scraper either
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"' and b"dashboard_" not in response.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_an_allowed_network_scrapes_without_a_token(client, settings, db):
    import ipaddress

    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 401
    # Behind one proxy: the client is the address the proxy appended, not what the client wrote.
    settings.DJANGO_PROXY_COUNT = 1
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.1.9.9").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1",
                      HTTP_X_FORWARDED_FOR="10.1.9.9, 203.0.113.5").status_code == 401


def test_metrics_are_exempt_from_the_https_redirect(settings, client, db):
    settings.SECURE_SSL_REDIRECT, settings.METRICS_TOKEN = True, TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/accounts/login/").status_code == 301


# --- the docs ----------------------------------------------------------------------------
_SELECTOR = re.compile(r"\b(dashboard_[a-z_]+)\s*(\{[^}]*\})?")
_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def _served(families):
    """{sample name: label names} of everything /metrics serves."""
    served = {}
    for family in families.values():
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    return served


def _check_expression(expr, served):
    names = _SELECTOR.findall(expr)
    assert names, expr
    for name, selector in names:
        assert name in served, f"{name} in {expr!r} is not a metric /metrics serves"
        for label in _LABEL.findall(selector or ""):
            assert label in served[name], f"{name} has no label {label} ({expr!r})"


@pytest.fixture
def everything_served(scraper, planted):
    review.review_database(database=planted)
    review.review_database(database=planted, sample=3)
    keyspace_watch.check_database(planted)  # the keyspace watch's figures and its alarm
    ReviewRun.objects.create(database=planted, status=ReviewRun.QUEUED)  # dashboard_jobs_active
    Secret.objects.create(name="stale", rotation_interval_days=30)
    Secret.objects.filter(name="stale").update(last_rotated=timezone.now() - timedelta(days=31))
    return _served(scraper())


def test_the_example_alert_rules_name_only_metrics_and_labels_that_exist(everything_served):
    rules = yaml.safe_load((DOCS / "alert-rules.yml").read_text())["groups"][0]["rules"]
    assert [rule["alert"] for rule in rules] == ["KeysWithoutTtlRising", "TtlReviewStale", "SecretRotationOverdue"]
    for rule in rules:
        _check_expression(rule["expr"], everything_served)
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.([a-z_]+)", text):
                assert any(label in labels for name, labels in everything_served.items()
                           if name in rule["expr"]), (rule["alert"], label)


def test_the_grafana_dashboard_queries_only_metrics_that_exist(everything_served):
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    for expr in expressions:
        _check_expression(expr, everything_served)
    variable = dashboard["templating"]["list"][0]["query"]
    _check_expression(variable, everything_served)
