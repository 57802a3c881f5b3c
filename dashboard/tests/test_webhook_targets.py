"""Alert webhooks refuse private, loopback and link-local targets unless the deployment
allows them, so "send test" is no port probe of the internal network (issue 11, item 7)."""

import pytest
from django.urls import reverse

from dashboard import alerts
from dashboard.models import AlertChannel, AuditEntry

INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook",
    "http://172.16.5.4/hook",
    "http://100.64.0.1/hook",
    "http://127.0.0.1:6379/",
    "http://localhost:5432/",
    "http://[::1]/hook",
    "http://[fd00::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_it_refuses_an_internal_webhook_target_when_saved(admin_client, db, url):
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "probe", "kind": "webhook", "url": url, "enabled": "on"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "is a private, loopback or link-local address" in body
    assert "ALERT_ALLOW_PRIVATE_TARGETS=1" in body
    assert not AlertChannel.objects.exists()
    assert not AuditEntry.objects.filter(action="alert_channel.create").exists()


def test_it_accepts_a_public_address(admin_client, db):
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "public", "kind": "webhook", "url": "https://8.8.8.8/hook", "enabled": "on"})
    assert response.status_code == 302
    assert AlertChannel.objects.get(name="public").url == "https://8.8.8.8/hook"


def test_send_test_refuses_an_internal_target_saved_before_the_rule_and_sends_nothing(admin_client, db, receiver,
                                                                                        settings):
    open_port = AlertChannel.objects.create(name="open", url=receiver.url("/hook"))
    closed_port = AlertChannel.objects.create(name="closed", url="http://127.0.0.1:9/hook")
    settings.ALERT_ALLOW_PRIVATE_TARGETS = False
    messages = []
    for channel in (open_port, closed_port):
        response = admin_client.post(reverse("dashboard:alert_channel_test", args=[channel.pk]),
                                     HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        ok, message = alerts.send_test(channel)
        assert not ok
        messages.append(message.replace(channel.name, ""))
    # No request went out, and an open port answers exactly like a closed one.
    assert receiver.requests == []
    assert messages[0] == messages[1]
    assert "is a private, loopback or link-local address" in messages[0]


def test_queued_alerts_to_an_internal_target_are_refused_too(db, receiver, settings):
    from dashboard.models import AlertDelivery

    channel = AlertChannel.objects.create(name="inside", url=receiver.url("/hook"))
    settings.ALERT_ALLOW_PRIVATE_TARGETS = False
    delivery = AlertDelivery.objects.create(channel=channel, event="x", title="t", text="")
    assert alerts.deliver(delivery.pk, max_attempts=1) == alerts.FAILED
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("refused: 127.0.0.1 is a private")
    assert receiver.requests == []


def test_the_deployment_may_allow_an_internal_receiver(admin_client, db, receiver):
    # `receiver` turns ALERT_ALLOW_PRIVATE_TARGETS on, as a deployment with an internal receiver would.
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "inside", "kind": "webhook", "url": receiver.url("/hook"), "enabled": "on"})
    assert response.status_code == 302
    ok, _ = alerts.send_test(AlertChannel.objects.get(name="inside"))
    assert ok and receiver.requests[0]["json"]["event"] == "test"
