"""Purge pages: form → estimate and preview on the worker (htmx polling, cancel) → retyped confirmation with a reason → live progress
(htmx polling) with cancel → finished summary linked to its audit entry."""

from django import forms
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from continuity import key_links, keyspace
from continuity.forms import PurgeConfirmForm as ConfirmForm
from continuity.models import FINDINGS, PurgeRun
from continuity.models.reviews import FINDING_LABELS
from continuity.operations import purge
from dashboard import jobs, roles
from dashboard.form_scanning import RefuseSecretsMixin
from dashboard.models import AuditEntry, RedisDatabase
from dashboard.scanning import find_secrets


class PurgeForm(RefuseSecretsMixin, forms.Form):
    # The operations refuse such a target too (`purge.targets.refuse_secret_target`); the form
    # also blanks it, so that the page re-rendered with the refusal does not hold it.
    secret_refusal = purge.SECRET_TARGET
    database = forms.ModelChoiceField(queryset=RedisDatabase.objects.all(), to_field_name="name", empty_label=None)
    target_kind = forms.ChoiceField(choices=[(PurgeRun.PREFIX, "Literal prefix"),
                                             (PurgeRun.PATTERN, "Glob pattern (advanced)"),
                                             (PurgeRun.FINDING, "Review finding")], initial=PurgeRun.PREFIX)
    target = forms.CharField(required=False, strip=False, max_length=1024)
    review = forms.IntegerField(required=False, min_value=1)
    finding = forms.ChoiceField(required=False, choices=[("", "—")] + [
        (kind, FINDING_LABELS[kind]) for kind in FINDINGS if kind != "unknown_namespace"])
    action = forms.ChoiceField(choices=PurgeRun.ACTIONS, initial=PurgeRun.DELETE)

    def clean(self):
        data = super().clean()
        if data.get("target_kind") == PurgeRun.FINDING and not (data.get("review") and data.get("finding")):
            raise forms.ValidationError("A review finding target needs the review number and the finding.")
        return data


@roles.role_required(roles.VIEWER)
def purge_list(request):
    runs = PurgeRun.objects.select_related("database")[:100]
    return render(request, "continuity/purge_list.html", {"runs": runs})


@roles.role_required(roles.OPERATOR)
def purge_new(request):
    """GET: the form. POST: a preview, queued for the worker; its page shows the instant
    estimate, then the preview's progress (nothing is touched, no SCAN in this request)."""
    # GET parameters prefill the form (the review page links here per finding); one that
    # looks like a secret is left out rather than put back on the page.
    initial = {name: value for name, value in request.GET.items() if not find_secrets(value)}
    form = PurgeForm(request.POST or None, initial=initial)
    error = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        finding = data["target_kind"] == PurgeRun.FINDING
        blocking = purge.blocking_run(data["database"])
        try:
            if blocking is not None:  # before any preview: this purge could not run anyway
                raise purge.PurgeRefused(purge.describe_blocking(blocking))
            run = purge.request_preview(database=data["database"], kind=data["target_kind"],
                                        value=b"" if finding else data["target"].encode("utf-8"),
                                        review_id=data["review"] if finding else None,
                                        finding=data["finding"] if finding else "", action=data["action"],
                                        actor=request.user)
            return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)
        except purge.PurgeRefused as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 — Redis errors, in the operator's words
            error = keyspace.describe_error(exc)
    elif form.errors:
        # Field errors never quote a refused value (RefuseSecretsMixin), so they can be shown.
        error = " ".join(message for messages in form.errors.values() for message in messages)
    status = 400 if request.method == "POST" else 200
    return render(request, "continuity/purge_new.html", {"form": form, "error": error}, status=status)


def _detail_context(run, **extra):
    finished_entry = AuditEntry.objects.filter(
        target_type="continuity.purgerun", target_id=str(run.pk),
        action__in=["purge.finish", "purge.fail", "purge.cancel"]).order_by("-id").first()
    sample = [key_links.short_display(keyspace.decode_key(t)) for t in run.preview_sample]
    reviewed = purge.review_counts(run)
    namespaces = [(prefix, run.preview_namespaces.get(prefix, 0), reviewed.get(prefix))
                  for prefix in sorted(set(run.preview_namespaces) | set(reviewed))]
    stalled = run.status == PurgeRun.RUNNING and purge.is_stalled(run)
    return {"run": run, "sample": sample, "audit_entry": finished_entry, "form": ConfirmForm(),
            "namespaces": namespaces, "reviewed": bool(reviewed), "stalled": stalled, **extra}


def _fragment(run):
    region = "preview_progress" if run.in_preview_stage else "progress"
    return f"continuity/purge_detail.html#{region}"


@roles.role_required(roles.VIEWER)
def purge_detail(request, pk):
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    return render(request, "continuity/purge_detail.html", _detail_context(run))


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def purge_progress(request, pk):
    """The progress region alone, polled by htmx while the run is active or previewing.
    A preview that ended reloads the page: the figures and the confirm form replace it."""
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    if not request.htmx:
        return render(request, "continuity/purge_detail.html", _detail_context(run))
    if request.GET.get("preview"):
        if not run.is_previewing:
            return HttpResponseClientRefresh()
        return render(request, "continuity/purge_detail.html#preview_progress", _detail_context(run))
    return render(request, "continuity/purge_detail.html#progress", _detail_context(run))


@roles.role_required(roles.OPERATOR)
@require_POST
def purge_confirm(request, pk):
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        error = " ".join(message for messages in form.errors.values() for message in messages)
        return render(request, "continuity/purge_detail.html", _detail_context(run, error=error, form=form),
                      status=400)
    try:
        with transaction.atomic():
            run = purge.confirm_purge(run=run, confirmation=form.cleaned_data.get("confirmation", ""),
                                      reason=form.cleaned_data.get("reason", ""), request=request)
            jobs.enqueue_on_commit(purge.PURGE_TASK, run.pk)
    except purge.PurgeRefused as exc:
        return render(request, "continuity/purge_detail.html", _detail_context(run, error=str(exc), form=form),
                      status=400)
    return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)


@roles.role_required(roles.OPERATOR)
@require_POST
def purge_resume(request, pk):
    """Hand a stalled purge (its worker died) to a worker again; audited."""
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    try:
        with transaction.atomic():
            purge.resume_purge(run=run, request=request)
            jobs.enqueue_on_commit(purge.PURGE_TASK, run.pk)
    except purge.PurgeRefused as exc:
        return render(request, _fragment(run), _detail_context(run, error=str(exc)), status=409)
    return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)


@roles.role_required(roles.OPERATOR)
@require_POST
def purge_cancel(request, pk):
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    try:
        run = purge.cancel_purge(run=run, request=request)
    except purge.PurgeRefused as exc:
        return render(request, _fragment(run), _detail_context(run, error=str(exc)), status=409)
    if request.htmx:
        return render(request, _fragment(run), _detail_context(run))
    return redirect(run)
