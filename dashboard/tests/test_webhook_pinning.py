"""A webhook's host is resolved once and the request goes to that vetted address (issue 15
H2): DNS that answers differently at send time, a redirect or a proxy from the environment
cannot move it. Real listeners on 127.0.0.1 (allowed here, as a deployment allows its internal
receiver) and 127.0.0.2 (not allowed: it stands for the internal network)."""

import socket
import ssl
import subprocess

import pytest

from conftest import Receiver
from dashboard import alerts, webhooks
from dashboard.models import AlertChannel, AlertDelivery


class Resolver:
    """getaddrinfo for names that exist only in the test: answers `answers` in turn (the last
    one again once exhausted) and records every question."""

    def __init__(self, *answers):
        self.answers, self.questions = list(answers), []

    def __call__(self, host, port, type=0):
        self.questions.append((host, port))
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]


@pytest.fixture
def inside(receiver):
    """A listener on 127.0.0.2, on the receiver's port: where a rebound name would lead."""
    server = Receiver(host="127.0.0.2", port=receiver.server.server_port)
    yield server
    server.close()


def test_it_resolves_once_and_sends_to_the_vetted_address(db, receiver, inside):
    port = receiver.server.server_port
    channel = AlertChannel.objects.create(name="rebind", url=f"http://rebind.test:{port}/hook")
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])  # vetted first, rebound after
    alerts.send(channel, event="e", title="t", text="x", resolver=resolver)
    assert resolver.questions == [("rebind.test", port)]
    assert inside.requests == []
    assert [(r["path"], r["host"], r["json"]["event"]) for r in receiver.requests] == \
        [("/hook", f"rebind.test:{port}", "e")]


@pytest.mark.parametrize("answer", [["127.0.0.2"], ["1.1.1.1", "127.0.0.2"], ["64:ff9b::7f00:2"], []])
def test_it_refuses_a_name_with_any_internal_address_or_none(db, receiver, inside, answer):
    port = receiver.server.server_port
    channel = AlertChannel.objects.create(name="rebind", url=f"http://rebind.test:{port}/hook")
    resolver = Resolver(answer, ["127.0.0.1"])
    with pytest.raises(webhooks.NotSent, match="an internal address|does not resolve"):
        alerts.send(channel, event="e", title="t", text="x", resolver=resolver)
    assert resolver.questions == [("rebind.test", port)]
    assert receiver.requests == inside.requests == []


def test_a_redirect_is_a_failure_and_is_not_followed(db, receiver, inside, eager, django_capture_on_commit_callbacks):
    receiver.reply_headers = {"Location": inside.url("/stolen")}
    receiver.statuses = [302] * alerts.MAX_ATTEMPTS
    AlertChannel.objects.create(name="moves", url=receiver.url("/hook"))
    with django_capture_on_commit_callbacks(execute=True):
        alerts.notify(event="secret.exposed", title="t", text="x")
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.last_error) == ("failed", "not delivered")
    assert len(receiver.requests) == alerts.MAX_ATTEMPTS
    assert inside.requests == []


def test_it_takes_no_proxy_from_the_environment(db, receiver, inside, monkeypatch):
    # A proxy would resolve the name again, after the check.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, inside.url(""))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    channel = AlertChannel.objects.create(name="direct", url=receiver.url("/hook"))
    assert alerts.send_test(channel) == (True, "Test alert delivered.")
    assert inside.requests == [] and len(receiver.requests) == 1


# --- https: the pinned connection keeps the name for SNI and the certificate check ----------
def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A test CA and a certificate for hooks.test signed by it (PEM files in one directory)."""
    path = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=path)
    _openssl("req", *key, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=hooks.test", cwd=path)
    (path / "leaf.ext").write_text("subjectAltName=DNS:hooks.test\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext", cwd=path)
    return path


@pytest.fixture
def tls_receiver(certificates, settings):
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "leaf.pem", certificates / "leaf.key")
    server = Receiver(tls=context)
    server.server_names = []
    context.sni_callback = lambda sock, name, ctx: server.server_names.append(name)
    yield server
    server.close()


def test_https_keeps_the_name_for_sni_host_and_certificate(tls_receiver, certificates):
    port = tls_receiver.server.server_port
    resolver = Resolver(["127.0.0.1"])
    webhooks.post_json(f"https://hooks.test:{port}/hook", {"event": "e"}, resolver=resolver,
                       verify=str(certificates / "ca.pem"))
    assert tls_receiver.server_names == ["hooks.test"]
    assert [(r["host"], r["json"]) for r in tls_receiver.requests] == [(f"hooks.test:{port}", {"event": "e"})]


def test_https_still_checks_the_certificate_against_the_name(tls_receiver, certificates):
    port = tls_receiver.server.server_port
    with pytest.raises(webhooks.NotSent, match="could not connect"):
        webhooks.post_json(f"https://other.test:{port}/hook", {"event": "e"}, resolver=Resolver(["127.0.0.1"]),
                           verify=str(certificates / "ca.pem"))
    assert tls_receiver.server_names == ["other.test"] and tls_receiver.requests == []
