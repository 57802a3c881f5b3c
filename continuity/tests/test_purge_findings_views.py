"""Review-finding purges from the pages: the button on the review, the prefilled form,
preview with the review's counts, retyped confirmation, permissions."""

import re

from django.urls import reverse

from continuity.models import PurgeRun, PurgeTargetKey
from continuity.tests import test_purge_findings as findings
from dashboard.models import AuditEntry

NO_TTL, OVERSIZED, TOTAL = findings.NO_TTL, findings.OVERSIZED, findings.TOTAL
reviewed = findings.reviewed  # the fixture: a keyspace with known offenders, reviewed


def post_preview(client, run, finding, action="delete"):
    """The form's POST, then the preview task it queued (run here, as the worker would)."""
    from continuity.operations import purge

    response = client.post(reverse("continuity:purge_new"), {"database": "lucia", "target_kind": "finding",
                                                             "review": run.pk, "finding": finding, "action": action})
    for queued in PurgeRun.objects.filter(status="previewing"):
        purge.run_preview(run_id=queued.pk)
    return response


def test_it_offers_a_purge_button_per_finding_to_operators_only(operator_client, viewer_client, reviewed):
    page = operator_client.get(reverse("continuity:review_detail", args=[reviewed.pk])).content.decode()
    for kind in ("no_ttl", "ttl_above_max", "oversized", "wrong_type"):
        assert f'data-testid="purge-finding-{kind}"' in page
        assert (f'?database=lucia&amp;target_kind=finding&amp;review={reviewed.pk}&amp;finding={kind}"') in page
    assert 'data-testid="purge-finding-unknown_namespace"' not in page
    assert "Purge these keys…" in page
    viewer_page = viewer_client.get(reverse("continuity:review_detail", args=[reviewed.pk])).content.decode()
    assert "purge-finding-" not in viewer_page and "Purge these keys" not in viewer_page


def test_it_prefills_the_purge_form_from_the_button(operator_client, reviewed):
    url = reverse("continuity:purge_new") + f"?database=lucia&target_kind=finding&review={reviewed.pk}&finding=no_ttl"
    page = operator_client.get(url).content.decode()
    assert re.search(r'<option value="finding" selected>', page)
    assert re.search(r'<option value="no_ttl" selected>', page)
    assert f'name="review" id="id_review" value="{reviewed.pk}"' in page
    assert "unknown_namespace" not in page


def test_it_previews_confirms_and_runs_a_finding_purge(operator_client, monitored, reviewed, eager,
                                                       django_capture_on_commit_callbacks):
    response = post_preview(operator_client, reviewed, "no_ttl")
    run = PurgeRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert re.search(r'data-testid="preview-matched">42<', page)
    assert "Review counted" in page and f"review #{reviewed.pk}" in page
    assert re.search(r'lucia:session:admin:</td><td class="has-text-right">7</td><td class="has-text-right">7<', page)
    assert f"<code class=\"key\">review {reviewed.pk} no_ttl</code>" in page
    monitored.expire(NO_TTL[0], 30)  # fixed between preview and execution
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                        {"confirmation": f"review {reviewed.pk} no_ttl", "reason": "cleanup"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.status, run.matched, run.done, run.skipped) == ("succeeded", 42, 41, 1)
    assert monitored.dbsize() == TOTAL - 41 and monitored.exists(NO_TTL[0])
    assert AuditEntry.objects.get(action="purge.queue").note == "cleanup"


def test_it_refuses_finding_purges_the_engine_refuses_and_touches_nothing(operator_client, monitored, reviewed):
    response = post_preview(operator_client, reviewed, "oversized", action="expire")
    assert response.status_code == 400 and b"cannot repair oversized" in response.content
    response = operator_client.post(reverse("continuity:purge_new"), {"database": "lucia", "target_kind": "finding",
                                                                      "finding": "no_ttl", "action": "delete"})
    assert response.status_code == 400 and b"needs the review number and the finding" in response.content
    assert monitored.dbsize() == TOTAL and not PurgeRun.objects.exists()


def test_it_forbids_viewers_to_preview_or_confirm_a_finding_purge(viewer_client, operator_client, monitored,
                                                                   reviewed):
    assert post_preview(viewer_client, reviewed, "oversized").status_code == 403
    assert not PurgeRun.objects.exists()
    post_preview(operator_client, reviewed, "oversized")
    run = PurgeRun.objects.get()
    response = viewer_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                  {"confirmation": f"review {reviewed.pk} oversized", "reason": "x"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == "previewed" and PurgeTargetKey.objects.filter(run=run).count() == len(OVERSIZED)
    assert all(monitored.exists(key) for key in OVERSIZED)
