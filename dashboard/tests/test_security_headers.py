"""Response headers every response carries (issue 11, item 7; issue 15): CSP without inline
script, a Permissions-Policy, nosniff, Referrer-Policy and X-Frame-Options, redirects, static
files and errors included; and the request id: always the server's own, with a client's
X-Request-ID kept apart, and only when it has a sane shape."""

import re
from pathlib import Path

import pytest
from django.urls import reverse

from dashboard.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("persona", ["anon", "viewer"])
def test_every_response_carries_a_csp_without_inline_script_and_a_permissions_policy(client, viewer_client, persona):
    http = client if persona == "anon" else viewer_client
    url = reverse("login") if persona == "anon" else reverse("dashboard:home")
    response = http.get(url)
    assert response.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'self'"
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe-inline" not in csp["script-src"] and "unsafe-eval" not in response["Content-Security-Policy"]
    policy = response["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in policy
    body = response.content.decode()
    # The only <script> tags load files; htmx may not eval.
    for tag in re.findall(r"<script\b[^>]*>", body):
        assert 'src="/static/' in tag, tag
    assert "<script>" not in body
    assert '"allowEval": false' in body


SECURITY_HEADERS = ("Content-Security-Policy", "Permissions-Policy", "X-Content-Type-Options", "Referrer-Policy",
                    "X-Frame-Options")


def assert_security_headers(response, settings):
    assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY
    assert response["Permissions-Policy"] == settings.PERMISSIONS_POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/keyspace/jobs/", "/static/css/app.css", "/no-such-page/"])
def test_the_https_redirect_carries_the_same_security_headers(client, settings, path):
    # DJANGO_HTTPS on (read at import, so the settings it drives are set here).
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    response = client.get(path)  # plain http
    assert response.status_code == 301 and response["Location"] == f"https://testserver{path}"
    assert_security_headers(response, settings)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    secure = client.get("/accounts/login/", secure=True)
    assert secure.status_code == 200 and "Strict-Transport-Security" in secure
    assert_security_headers(secure, settings)


def test_a_static_file_carries_the_same_security_headers(client, settings):
    # WhiteNoise answers static files itself, above the views; here from the finders, as
    # `collectstatic` has not run in tests.
    settings.WHITENOISE_USE_FINDERS = settings.WHITENOISE_AUTOREFRESH = True
    response = client.get("/static/css/app.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")
    assert_security_headers(response, settings)


@pytest.mark.parametrize("persona,path,status", [
    ("anon", "/", 302),                       # to the sign-in page
    ("viewer", "/no-such-page/", 404),
    ("viewer", "/keyspace/jobs/schedules/1/", 403),
    ("viewer", "/", 200),
])
def test_every_status_carries_the_same_security_headers(client, viewer_client, settings, persona, path, status):
    response = (client if persona == "anon" else viewer_client).get(path)
    assert response.status_code == status
    assert_security_headers(response, settings)


def test_no_template_carries_inline_script_or_event_handler_attributes():
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{template}: inline script"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{template}: on*= attribute"
        assert "javascript:" not in text.lower(), template


@pytest.mark.parametrize("incoming, kept", [
    ("req-1234567890", True),
    ("a" * 64, True),
    ("a0e3c2e172dd46798b91b0b3b33da3ab", True),  # nginx's $request_id: random hex is not a secret
    ("req-1234567890\n", False),           # `$` would have let the newline through
    ("req-1234567890\nX-Evil: 1", False),
    ("short", False),
    ("a" * 65, False),
    ("req 1234567890", False),
    ("<script>alert(1)</script>", False),
    ("ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5", False),  # a token is not stored in the audit log
    ("AKIAIOSFODNN7EXAMPLE", False),
])
def test_a_client_request_id_is_kept_apart_and_only_in_a_valid_shape(operator_client, lucia, incoming, kept):
    response = operator_client.post(reverse("dashboard:database_edit", args=["lucia"]), edit_lucia(lucia),
                                    HTTP_X_REQUEST_ID=incoming)
    assert response.status_code == 302
    entry = AuditEntry.objects.latest("pk")
    # The audit group is always the server's own id, which the response returns.
    assert re.fullmatch(r"[0-9a-f]{32}", entry.request_id) and entry.request_id == response["X-Request-ID"]
    assert entry.request_id != incoming
    assert entry.client_request_id == (incoming if kept else "")


def edit_lucia(lucia, note="changed by a request with an id"):
    from dashboard.record_forms import RedisDatabaseForm

    data = {name: value for name, value in RedisDatabaseForm(instance=lucia).initial.items() if value is not None}
    data.update(read_regions=",".join(lucia.read_regions), notes=note)
    return data


def test_a_client_cannot_join_another_requests_audit_group(operator_client, viewer_client, admin_client, lucia,
                                                           viewer):
    url = reverse("dashboard:database_edit", args=["lucia"])
    first = operator_client.post(url, edit_lucia(lucia, "first"), HTTP_X_REQUEST_ID="req-shared-1234")
    second = admin_client.post(reverse("dashboard:user_role", args=[viewer.pk]),
                               {"role": "operator", "is_active": "on"}, HTTP_X_REQUEST_ID="req-shared-1234")
    assert (first.status_code, second.status_code) == (302, 200)  # the role form answers its row
    one, two = AuditEntry.objects.get(action="database.edit"), AuditEntry.objects.get(action="user.role")
    assert one.request_id == first["X-Request-ID"] and two.request_id == second["X-Request-ID"]
    assert one.request_id != two.request_id
    assert one.client_request_id == two.client_request_id == "req-shared-1234"
    detail = viewer_client.get(reverse("dashboard:audit_detail", args=[one.pk])).content.decode()
    assert "Same request" not in detail and "user.role" not in detail
    assert """data-testid="client-request-id">(client's X-Request-ID: req-shared-1234)<""" in detail
