"""Alert webhooks reach public addresses only, whatever the URL looks like (issue 11 item 7,
issue 15 H2). Each bypass is aimed at a real loopback listener, which must receive nothing
through "send test" and through a queued alert; and every refusal or failure reads the same."""

import logging
import re

import pytest
from django.urls import reverse

from conftest import Receiver
from dashboard import alerts
from dashboard.models import AlertChannel, AlertDelivery, AuditEntry

NOT_DELIVERED = '<p class="help is-danger" data-testid="test-result">Test alert not delivered.</p>'

# (URL, with {port} the listener's; what the server log says). Each reaches 127.0.0.1:{port},
# the metadata service or the LAN, if anything in the send path read it differently.
BYPASSES = [
    ("http://127.0.0.1:{port}\\@1.1.1.1/x", "backslash"),
    ("http://169.254.169.254\\@1.1.1.1/latest/meta-data/", "backslash"),
    ("http://10.0.0.1\\@1.1.1.1/x", "backslash"),
    ("http://1.1.1.1@127.0.0.1:{port}/x", "user name or password"),
    ("http://u:p@127.0.0.1:{port}/x", "user name or password"),
    ("http://2130706433:{port}/x", "four decimal numbers"),
    ("http://0x7f.1:{port}/x", "four decimal numbers"),
    ("http://017700000001:{port}/x", "four decimal numbers"),
    ("http://127.1:{port}/x", "four decimal numbers"),
    ("http://[::ffff:127.0.0.1]:{port}/x", "internal address"),
    ("http://[::127.0.0.1]:{port}/x", "internal address"),
    ("http://[64:ff9b::7f00:1]:{port}/x", "internal address"),
    ("http://[64:ff9b::a00:1]:{port}/x", "internal address"),
    ("http://[64:ff9b:1::7f00:1]:{port}/x", "internal address"),
    ("http://[2002:7f00:1::]:{port}/x", "internal address"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/x", "internal address"),  # Teredo, 127.0.0.1
    ("http://[fe80::1%25lo]:{port}/x", "read the URL differently"),
    ("http://127.0.0.1:{port}/a/../x", "read the URL differently"),
]
INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook",
    "http://172.16.5.4/hook",
    "http://100.64.0.1/hook",
    "http://127.0.0.1:6379/",
    "http://[::1]/hook",
    "http://[fd00::1]/hook",
    "http://[ff02::1]/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://0.0.0.0/hook",
]


@pytest.fixture
def listener(receiver, settings):
    """The loopback receiver, with the deployment's default: no private host allowed."""
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = []
    return receiver


@pytest.fixture
def alert_log(caplog):
    """The server log of dashboard.alerts. Its own handler: a first eager Celery task
    reconfigures the root logger's handlers, and caplog's would miss that task's lines."""
    logger = logging.getLogger("dashboard.alerts")
    caplog.set_level(logging.WARNING, logger=logger.name)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _channel(url, name="probe"):
    # Saved past the form, as a channel saved before these rules would be.
    return AlertChannel.objects.create(name=name, kind="webhook", url=url)


@pytest.mark.parametrize("url", [url.replace(":{port}", "") for url, _ in BYPASSES] + INTERNAL)
def test_it_refuses_to_save_a_webhook_that_reaches_inside(admin_client, db, url):
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "probe", "kind": "webhook", "url": url, "enabled": "on"})
    assert response.status_code == 200
    # Django's URL check, the secret scanner (user:password@) or this rule: whichever comes first.
    assert response.context["form"].errors["url"]
    assert not AlertChannel.objects.exists()
    assert not AuditEntry.objects.filter(action="alert_channel.create").exists()


@pytest.mark.parametrize("url,reason", BYPASSES)
def test_send_test_sends_nothing_through_a_bypass(admin_client, listener, alert_log, url, reason):
    channel = _channel(url.format(port=listener.server.server_port))
    response = admin_client.post(reverse("dashboard:alert_channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")
    assert listener.requests == []
    assert NOT_DELIVERED in response.content.decode()
    # Refused before any connection: the log gives the reason, not a connection failure.
    assert reason in alert_log.text and "could not connect" not in alert_log.text


@pytest.mark.parametrize("url,reason", BYPASSES)
def test_a_queued_alert_sends_nothing_through_a_bypass(db, listener, eager, alert_log,
                                                       django_capture_on_commit_callbacks, url, reason):
    _channel(url.format(port=listener.server.server_port))
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.notify(event="secret.exposed", title="t", text="x") == 1
    assert listener.requests == []
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", alerts.MAX_ATTEMPTS, "not delivered")
    assert reason in alert_log.text and "could not connect" not in alert_log.text


def test_it_accepts_a_public_address_and_a_name(admin_client, db):
    # A name is resolved at every send, never at save: saving says nothing about DNS.
    for name, url in [("public", "https://8.8.8.8/hook"), ("named", "https://hooks.example.invalid/services/x")]:
        response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                     {"name": name, "kind": "webhook", "url": url, "enabled": "on"})
        assert response.status_code == 302
        assert AlertChannel.objects.get(name=name).url == url


def test_send_test_answers_the_same_for_every_refusal_and_failure(admin_client, receiver, alert_log):
    port = receiver.server.server_port
    inside = Receiver(host="127.0.0.2")  # where a followed redirect would land; not allowed
    receiver.reply_headers = {"Location": inside.url("/stolen")}
    receiver.statuses = [302, 500]
    urls = [receiver.url("/redirects"), receiver.url("/fails"), "http://127.0.0.1:9/closed", "http://10.0.0.1/x",
            f"http://127.0.0.1:{port}\\@1.1.1.1/x", "http://hooks.example.invalid/x"]
    channels = [_channel(url, f"channel-{n}") for n, url in enumerate(urls)]
    try:
        bodies = [admin_client.post(reverse("dashboard:alert_channel_test", args=[channel.pk]),
                                    HTTP_HX_REQUEST="true").content.decode() for channel in channels]
    finally:
        inside.close()
    assert inside.requests == []
    assert [r["path"] for r in receiver.requests] == ["/redirects", "/fails"]
    for channel, body in zip(channels, bodies):
        assert NOT_DELIVERED in body
        shown = body.replace(f"channel-{channel.pk}", "").replace(f"/{channel.pk}/", "/")  # the row's own id
        # Whole words: an id or a count on the page may hold the digits (row 1500).
        assert not re.search(r"\b(302|500|connect|refused|resolve|internal)\b", shown), shown
    assert {c.last_error for c in AlertChannel.objects.all()} == {"not delivered"}
    assert [e.after for e in AuditEntry.objects.filter(action="alert_channel.test")] == \
        [{"ok": False, "result": "Test alert not delivered."}] * len(channels)
    # The detail is in the server log, for whoever runs the deployment, without the URL's path.
    for detail in ("HTTP 302", "HTTP 500", "could not connect", "10.0.0.1 is an internal address", "backslash",
                   "hooks.example.invalid does not resolve"):
        assert detail in alert_log.text
    assert "/redirects" not in alert_log.text and "/closed" not in alert_log.text


def test_the_page_shows_where_a_send_would_go(db):
    assert _channel("http://127.0.0.1:8080\\@1.1.1.1/x").masked_url() == "http://127.0.0.1:8080/…"
    assert _channel("http://u:secret@hooks.example.test/x", "u").masked_url() == "http://hooks.example.test/…"


def test_the_deployment_may_allow_an_internal_receiver(admin_client, db, receiver, settings):
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = []
    refused = admin_client.post(reverse("dashboard:alert_channel_create"),
                                {"name": "inside", "kind": "webhook", "url": receiver.url("/hook"), "enabled": "on"})
    assert refused.status_code == 200 and "ALERT_ALLOWED_PRIVATE_HOSTS does not name it" in refused.content.decode()
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "inside", "kind": "webhook", "url": receiver.url("/hook"), "enabled": "on"})
    assert response.status_code == 302
    ok, _ = alerts.send_test(AlertChannel.objects.get(name="inside"))
    assert ok and receiver.requests[0]["json"]["event"] == "test"
