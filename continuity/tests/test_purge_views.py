"""Purge pages: permissions, preview, confirmation, htmx progress and cancel, audit."""

import re

import pytest
from django.urls import reverse

from continuity.models import PurgeRun
from continuity.operations import purge
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture
def filled(monitored, lucia):
    pipe = monitored.pipeline(transaction=False)
    for i in range(15):  # 16 session keys: all fit in the preview sample of 20, whatever SCAN order
        pipe.set(f"lucia:session:{i}".encode(), b"v")
    pipe.set(b"lucia:session:<b>x</b>", b"v")
    pipe.set(b"lucia:focus:1", b"v")
    pipe.execute()
    return monitored


def preview(client, target="lucia:session:", kind="prefix", action="delete", **headers):
    return client.post(reverse("continuity:purge_new"),
                       {"database": "lucia", "target_kind": kind, "target": target, "action": action}, **headers)


@pytest.fixture
def previewed(operator_client, eager, django_capture_on_commit_callbacks):
    """POST the form, then let the worker's part run: the preview task the request queued
    (eagerly, once the request's transaction has committed)."""

    def post(**kwargs):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = preview(operator_client, **kwargs)
        assert len(callbacks) == (1 if response.status_code == 302 else 0)
        return response

    return post


def calls(client, command):
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_it_lets_viewers_see_runs_but_not_start_or_confirm_them(viewer_client, filled, operator):
    run = purge.preview_purge(action="delete",
                              database=PurgeRun._meta.get_field("database").related_model.objects.get(name="lucia"),
                              kind="prefix", value=b"lucia:session:", actor=operator).run
    assert viewer_client.get(reverse("continuity:purge_list")).status_code == 200
    page = viewer_client.get(run.get_absolute_url())
    assert page.status_code == 200 and b"confirm-form" not in page.content
    assert preview(viewer_client).status_code == 403
    response = viewer_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                  {"confirmation": "lucia:session:", "reason": "x"})
    assert response.status_code == 403
    assert viewer_client.post(reverse("continuity:purge_cancel", args=[run.pk])).status_code == 403
    assert filled.dbsize() == 17 and PurgeRun.objects.get().status == "previewed"


def test_it_queues_the_preview_without_scanning_in_the_request(operator_client, filled,
                                                                django_capture_on_commit_callbacks):
    filled.config_resetstat()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = preview(operator_client, HTTP_HX_REQUEST="true")
    run = PurgeRun.objects.get()
    assert response.status_code == 200 and response["HX-Redirect"] == run.get_absolute_url()
    assert calls(filled, "scan") == 0 and calls(filled, "dbsize") == 1  # the estimate: one DBSIZE, no SCAN
    assert len(callbacks) == 1  # the preview task, sent once the run is committed
    assert (run.status, run.preview_scanned, run.estimate_keys, run.estimate_at_most, run.estimate_source) == \
        ("previewing", 0, 17, True, "dbsize")
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert re.search(r'unknown, at most <strong data-testid="estimate-keys">17</strong> keys match', page)
    assert '(from DBSIZE, <time datetime=' in page and 'data-testid="cancel-preview-button"' in page
    assert "?preview=1\" hx-trigger=\"every 1s\"" in page and 'data-testid="confirm-form"' not in page
    # The polled region: progress while previewing, a page refresh once the preview ended.
    url = reverse("continuity:purge_progress", args=[run.pk]) + "?preview=1"
    fragment = operator_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and 'data-testid="preview-scanned">0<' in fragment
    purge.run_preview(run_id=run.pk)
    assert operator_client.get(url, HTTP_HX_REQUEST="true")["HX-Refresh"] == "true"
    assert calls(filled, "scan") >= 1


def test_it_previews_with_exact_counts_and_escaped_sample(operator_client, filled, previewed):
    response = previewed()
    run = PurgeRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert re.search(r'data-testid="preview-matched">16<', page)
    assert "lucia:session:&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert 'data-testid="confirm-form"' in page
    assert filled.dbsize() == 17


def test_it_shows_a_refusal_on_the_form_and_touches_nothing(operator_client, filled):
    response = preview(operator_client, target="lucia:*", kind="pattern")
    assert response.status_code == 400 and b"reaches beyond the registered namespaces" in response.content
    assert preview(operator_client, target="").status_code == 400
    assert filled.dbsize() == 17 and not PurgeRun.objects.exists()


def test_it_refuses_a_mistyped_confirmation(operator_client, filled, previewed):
    previewed()
    run = PurgeRun.objects.get()
    response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                    {"confirmation": "lucia:session", "reason": "cleanup"})
    assert response.status_code == 400 and b"does not match" in response.content
    run.refresh_from_db()
    assert run.status == "previewed" and filled.dbsize() == 17


def test_it_confirms_runs_and_audits_the_purge(operator_client, filled, eager, previewed,
                                              django_capture_on_commit_callbacks):
    previewed()
    run = PurgeRun.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                        {"confirmation": "lucia:session:", "reason": "cleanup"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == run.get_absolute_url()
    run.refresh_from_db()
    assert (run.status, run.matched, run.done) == ("succeeded", 16, 16)
    assert filled.dbsize() == 1
    queue = AuditEntry.objects.get(action="purge.queue")
    assert queue.source == "web" and queue.actor_label == "otto" and queue.note == "cleanup"
    finish = AuditEntry.objects.get(action="purge.finish")
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert f'href="{reverse("dashboard:audit_detail", args=[finish.pk])}"' in page
    assert 'data-testid="purge-finished"' in page


def test_it_serves_the_progress_fragment_to_htmx_and_polls_only_while_active(operator_client, filled, operator):
    from dashboard.models import RedisDatabase

    lucia = RedisDatabase.objects.get(name="lucia")
    prev = purge.preview_purge(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    run = purge.confirm_purge(run=prev.run, confirmation="lucia:session:", reason="r", actor=operator)
    url = reverse("continuity:purge_progress", args=[run.pk])
    fragment = operator_client.get(url, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in body and 'hx-trigger="every 1s"' in body
    assert fragment["Vary"] and "HX-Request" in fragment["Vary"]
    assert "<html" in operator_client.get(url).content.decode()
    # Cancel from the progress box: a queued run stops at once, audited.
    response = operator_client.post(reverse("continuity:purge_cancel", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'hx-trigger' not in response.content.decode()
    run.refresh_from_db()
    assert run.status == "cancelled" and filled.dbsize() == 17
    assert AuditEntry.objects.filter(action="purge.cancel", target_id=str(run.pk), actor_label="otto").exists()


def test_it_lists_purges_with_a_bounded_number_of_queries(viewer_client, filled, operator,
                                                        django_assert_max_num_queries):
    from dashboard.models import RedisDatabase

    lucia = RedisDatabase.objects.get(name="lucia")
    for value in (b"lucia:session:", b"lucia:focus:", b"lucia:rate:"):
        purge.preview_purge(action="delete", database=lucia, kind="prefix", value=value, actor=operator)
    with django_assert_max_num_queries(12):
        page = viewer_client.get(reverse("continuity:purge_list"))
    assert page.content.decode().count('data-testid="purge-row"') == 3
    assert b"New purge" not in page.content  # viewers cannot start one
    jobs = viewer_client.get(reverse("continuity:job_list")).content.decode()
    assert reverse("continuity:purge_list") in jobs


def test_it_offers_to_resume_a_stalled_purge_and_refuses_a_new_one_before_previewing(
        operator_client, viewer_client, operator, filled, lucia, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    run = purge.estimate_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                               actor=operator)
    run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="tidy", actor=operator, source="cli")
    PurgeRun.objects.filter(pk=run.pk).update(status="running", matched=900, done=900,
                                              heartbeat_at=timezone.now() - timedelta(minutes=5))
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert 'data-testid="purge-stalled"' in page and 'data-testid="resume-button"' in page
    assert 'data-testid="resume-button"' not in viewer_client.get(run.get_absolute_url()).content.decode()

    before = PurgeRun.objects.count()
    response = operator_client.post(reverse("continuity:purge_new"),
                                    {"database": "lucia", "target_kind": "prefix", "target": "lucia:focus:",
                                     "action": "delete"})
    body = response.content.decode()
    assert response.status_code == 400 and f"Purge #{run.pk} of lucia" in body and "looks dead" in body
    assert PurgeRun.objects.count() == before  # no preview queued

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(reverse("continuity:purge_resume", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == run.get_absolute_url()
    assert len(callbacks) == 1  # the purge task, enqueued on commit
    assert AuditEntry.objects.get(action="purge.resume", target_id=str(run.pk)).actor == operator
    assert viewer_client.post(reverse("continuity:purge_resume", args=[run.pk])).status_code == 403
