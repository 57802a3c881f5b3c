"""Every page the app serves (the access matrix's URL list), opened by an admin: one <h1>, and
every visible form control has an accessible name (a <label for>, a wrapping <label>,
aria-label or aria-labelledby)."""

from html.parser import HTMLParser

import pytest
from django.urls import resolve, reverse
from django_celery_beat.models import PeriodicTask

from continuity import keyspace
from continuity.models import Namespace
from continuity.operations import purge, review
from dashboard import audit
from dashboard.models import AccountAccess, AlertChannel, AuditEntry, ChecklistItem, EnvVar, PhaseMapping, Secret
from dashboard.tests.test_access_matrix import URLS

UNNAMED_TYPES = {"hidden", "submit", "button", "reset", "image"}
# Answers that are not HTML pages: POST-only actions, a file download, a Markdown export, the
# health probe, logout; and the login page, which sends a signed-in admin on (tested below).
NOT_PAGES = {"dashboard:secret_exposed", "dashboard:checklist_toggle", "dashboard:alert_channel_test",
             "dashboard:user_role", "dashboard:user_create", "continuity:review_cancel", "continuity:review_start",
             "continuity:purge_cancel", "continuity:purge_resume", "continuity:purge_confirm", "continuity:key_action",
             "continuity:key_download", "dashboard:runbook_markdown", "healthz", "logout", "login",
             # Prometheus text, and the single sign-on redirects (their pages: test_sso).
             "metrics", "oidc_authentication_init", "oidc_authentication_callback",
             "dashboard:secret_source_check", "dashboard:secret_source_record", "dashboard:database_source_check",
             "dashboard:database_source_adopt", "continuity:review_retry", "continuity:purge_retry",
             "continuity:key_reveal"}


class PageAudit(HTMLParser):
    """Counts <h1> and collects the form controls that have no accessible name."""

    def __init__(self):
        super().__init__()
        self.h1 = 0
        self.label_for = set()
        self.label_depth = 0
        self.controls = []  # (description, id, named without a <label for>)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h1":
            self.h1 += 1
        elif tag == "label":
            self.label_depth += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and (attrs.get("type") or "text").lower() in UNNAMED_TYPES:
                return
            if "hidden" in attrs:
                return
            named = bool(self.label_depth or attrs.get("aria-label") or attrs.get("aria-labelledby"))
            self.controls.append((f"<{tag} name={attrs.get('name')!r}>", attrs.get("id"), named))

    def handle_endtag(self, tag):
        if tag == "label" and self.label_depth:
            self.label_depth -= 1

    def unnamed(self):
        return [desc for desc, id_, named in self.controls if not named and (not id_ or id_ not in self.label_for)]


def _audit(body):
    parser = PageAudit()
    parser.feed(body)
    parser.close()
    return parser


def test_the_page_audit_catches_what_it_should():
    page = _audit('<h1>A</h1><label for="a">A</label><input id="a"><label>B <input name="b"></label>'
                  '<input name="c" aria-label="C"><input type="hidden" name="d"><select name="e"></select>'
                  '<textarea name="f" id="f"></textarea><button type="submit">Go</button><h1>B</h1>')
    assert page.h1 == 2
    assert page.unnamed() == ["<select name='e'>", "<textarea name='f'>"]


@pytest.fixture
def every_object(admin, lucia, monitored, operator, connect, upstash_api):
    """One real object behind every URL parameter, so that no page is left out by a 404 (the
    sources of truth configured, against their local servers: their panels and pages too)."""
    monitored.set(b"lucia:session:1", b"v")
    channel = AlertChannel.objects.create(name="ops", url="http://127.0.0.1:9/hook")
    audit.record(action="test.entry", target=channel, target_label="ops", actor=admin)
    env = EnvVar.objects.order_by("pk").first()
    secret_name = Secret.objects.order_by("pk").first().name
    purge_run = purge.preview_purge(action="delete",
                                    database=lucia, kind="prefix", value=b"lucia:session:", actor=operator).run
    return {
        "dashboard:account_detail": {"pk": AccountAccess.objects.order_by("pk").first().pk},
        "dashboard:account_edit": {"pk": AccountAccess.objects.order_by("pk").first().pk},
        "dashboard:alert_channel_edit": {"pk": channel.pk},
        "dashboard:audit_detail": {"pk": AuditEntry.objects.order_by("pk").first().pk},
        "dashboard:checklist_edit": {"pk": ChecklistItem.objects.order_by("pk").first().pk},
        "dashboard:phase_edit": {"pk": PhaseMapping.objects.order_by("pk").first().pk},
        "dashboard:envvar_detail": {"name": env.name},
        "dashboard:envvar_edit": {"name": env.name},
        "dashboard:database_detail": {"name": lucia.name},
        "dashboard:database_edit": {"name": lucia.name},
        "dashboard:secret_detail": {"name": secret_name},
        "dashboard:secret_edit": {"name": secret_name},
        "dashboard:secret_rotate": {"name": secret_name},
        "dashboard:secret_source": {"name": secret_name},
        "continuity:review_detail": {"pk": review.review_database(database=lucia).run.pk},
        "continuity:schedule_edit": {"pk": PeriodicTask.objects.get(name="ttl review").pk},
        "continuity:schedule_cost": {"pk": PeriodicTask.objects.get(name="ttl review").pk},
        "continuity:purge_detail": {"pk": purge_run.pk},
        "continuity:purge_progress": {"pk": purge_run.pk},
        "continuity:key_detail": {"database": lucia.name, "token": keyspace.encode_key(b"lucia:session:1")},
        "continuity:namespace_edit": {"database": lucia.name,
                                      "pk": Namespace.objects.filter(database=lucia).order_by("pk").first().pk},
    }


def _pages(every_object):
    """The access matrix's URLs with real parameters, minus the answers that are not pages."""
    for sample in URLS:
        match = resolve(sample)
        if match.view_name in NOT_PAGES or sample.startswith("/static/"):
            continue
        kwargs = every_object.get(match.view_name, {})
        kwargs = {name: kwargs.get(name, "lucia") for name in match.kwargs}
        yield match.view_name, reverse(match.view_name, kwargs=kwargs)


def test_every_page_has_one_h1_and_named_controls(admin_client, every_object):
    checked, problems = [], []
    for name, url in _pages(every_object):
        response = admin_client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        body = response.content.decode()
        if "<html" not in body:  # a fragment URL answers a plain GET with its region only
            continue
        page = _audit(body)
        checked.append(name)
        if page.h1 != 1:
            problems.append(f"{url}: {page.h1} <h1>")
        problems += [f"{url}: unnamed {control}" for control in page.unnamed()]
    assert not problems, "\n".join(problems)
    assert len(checked) >= 40 and "continuity:schedule_edit" in checked and "dashboard:user_list" in checked


def test_the_login_page_has_one_h1_and_named_controls(client, db):
    page = _audit(client.get(reverse("login")).content.decode())
    assert page.h1 == 1 and not page.unnamed() and len(page.controls) == 2
