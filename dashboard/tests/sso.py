"""Helpers of the single sign-on tests: the dashboard configured against the demo provider,
a person's side of the provider (its login form, over HTTP), and a proxy in front of the
provider that can tamper with its answers."""

import base64
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urljoin, urlsplit

import requests

CLIENT_ID = "continuity-dashboard"
CLIENT_SECRET = "client-secret-for-tests-7Hq2vX9pLm4R"
PASSWORD = "provider password 4 tests"
GROUP_ROLES = {"dashboard-admins": "admin", "dashboard-operators": "operator", "dashboard-viewers": "viewer"}


def configure(settings, issuer, discovery_url=None, **extra):
    """Turn single sign-on on for the test (the settings a deployment sets through OIDC_*)."""
    from dashboard.sso import provider

    provider.forget()
    settings.SSO_ENABLED = True
    settings.OIDC_ISSUER = issuer
    settings.OIDC_DISCOVERY_URL = discovery_url or f"{issuer}/.well-known/openid-configuration"
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.OIDC_GROUP_ROLES = dict(GROUP_ROLES)
    settings.OIDC_PROVIDER_NAME = "Demo provider"
    settings.AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "dashboard.sso.backends.LocalBackend",
                                        "dashboard.sso.backends.OIDCBackend"]
    for name, value in extra.items():
        setattr(settings, name, value)


class PersonAtProvider:
    """A person's browser on the provider's side, over HTTP (requests): follows the provider's
    redirects, fills its login form when asked, and stops at the dashboard's callback URL."""

    def __init__(self, username, password=PASSWORD):
        self.username, self.password = username, password
        self.http = requests.Session()

    def authorize(self, url, max_steps=10):
        """Follow `url` (the provider's authorization URL) to the callback URL it ends at."""
        for _ in range(max_steps):
            answer = self.http.get(url, allow_redirects=False, timeout=10)
            if answer.status_code not in (301, 302, 303):
                raise AssertionError(f"the provider answered {answer.status_code}: {answer.text[:500]}")
            location = urljoin(url, answer.headers["Location"])
            if "/oidc/callback/" in location:
                return location
            url = self._log_in(location) if urlsplit(location).path == "/login/" else location
        raise AssertionError("too many redirects at the provider")

    def _log_in(self, login_url):
        page = self.http.get(login_url, timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        next_url = re.search(r'name="next" value="([^"]*)"', page.text).group(1).replace("&amp;", "&")
        answer = self.http.post(login_url, data={"csrfmiddlewaretoken": token, "username": self.username,
                                                 "password": self.password, "next": next_url},
                                allow_redirects=False, timeout=10)
        assert answer.status_code == 302, f"the provider refused {self.username}'s password"
        return urljoin(login_url, answer.headers["Location"])


def follow_to_dashboard(client, callback_url):
    """Hand the provider's redirect to the dashboard's callback (Django's test client)."""
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client, person, start="/oidc/authenticate/"):
    """The whole authorization-code flow: the dashboard's redirect, the provider (login form
    included), back to the callback. Returns the callback's response."""
    answer = client.get(start)
    assert answer.status_code == 302, answer.content[:500]
    return follow_to_dashboard(client, person.authorize(answer["Location"]))


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge_claims(id_token, **claims):
    """`id_token` with its payload changed and its signature kept (what an attacker in the
    middle could send)."""
    header, payload, signature = id_token.split(".")
    data = json.loads(_unb64(payload))
    data.update(claims)
    return ".".join([header, _b64(json.dumps(data).encode()), signature])


class ProviderProxy:
    """A real HTTP proxy on loopback in front of the provider, forwarding every request with
    its Host header (so the provider names the proxy as its issuer). `tamper(token_json)` may
    change the token endpoint's answer; `token_host` sends the token request to the provider
    under another Host (its ID token then names another issuer)."""

    def __init__(self, target_port):
        self.tamper = None
        self.token_host = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                token_call = self.path.startswith("/openid/token")
                if token_call and proxy.token_host:
                    headers["Host"] = proxy.token_host
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=10)
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                if token_call and proxy.tamper and answer.status == 200:
                    data = json.dumps(proxy.tamper(json.loads(data))).encode()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def issuer(self):
        return f"http://127.0.0.1:{self.server.server_port}/openid"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
