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
from continuity.models import FINDINGS, Namespace, PurgeRun
from continuity.models.reviews import FINDING_LABELS
from continuity.operations import purge
from dashboard import jobs, roles
from dashboard.form_scanning import RefuseSecretsMixin
from dashboard.models import AuditEntry, RedisDatabase
from dashboard.scanning import find_secrets


class PurgeForm(RefuseSecretsMixin, forms.Form):
    """A purge's scope — namespace ∩ literal prefix ∩ finding — and its action. The engine
    decides and refuses (`purge.targets.decide_target`); this form only binds the fields."""

    # The operations refuse such a target too (`purge.targets.refuse_secret_target`); the form
    # also blanks it, so that the page re-rendered with the refusal does not hold it.
    secret_refusal = purge.SECRET_TARGET
    database = forms.ModelChoiceField(queryset=RedisDatabase.objects.all(), to_field_name="name", empty_label=None)
    target_kind = forms.ChoiceField(label="Target", choices=[
        (PurgeRun.PREFIX, "Keys under a literal prefix"), (PurgeRun.PATTERN, "Glob pattern (advanced)"),
        (PurgeRun.FINDING, "A review finding")], initial=PurgeRun.PREFIX)
    namespace = forms.ChoiceField(required=False, label="Namespace")
    target = forms.CharField(required=False, strip=False, max_length=1024, label="Prefix or pattern")
    review = forms.IntegerField(required=False, min_value=1, label="Review #")
    finding = forms.ChoiceField(required=False, label="Only keys with the finding", choices=[("", "any key")] + [
        (kind, FINDING_LABELS[kind]) for kind in FINDINGS if kind != "unknown_namespace"])
    action = forms.ChoiceField(required=False, label="Action", initial="", choices=[
        ("", "The least destructive fix (apply the policy TTL for no TTL and above the maximum)"),
        (PurgeRun.EXPIRE, "Apply the policy TTL (deletes nothing)"), (PurgeRun.DELETE, "Delete (UNLINK)")])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Namespace.objects.order_by("name").values_list("name", flat=True).distinct()
        self.fields["namespace"].choices = [("", "any namespace the prefix reaches")] + [(n, n) for n in names]

    def clean(self):
        data = super().clean()
        if data.get("target_kind") == PurgeRun.FINDING and not (data.get("review") and data.get("finding")):
            raise forms.ValidationError("A review finding target needs the review number and the finding.")
        return data

    def target_args(self):
        """The keyword arguments of `purge.new_run` / `purge.request_preview` for this scope."""
        data = self.cleaned_data
        finding = data["target_kind"] == PurgeRun.FINDING
        return {"database": data["database"], "kind": data["target_kind"], "value": data["target"].encode("utf-8"),
                "review_id": data["review"] if finding else None, "finding": data["finding"] or "",
                "namespace": data["namespace"] or None, "action": data["action"] or None}


@roles.role_required(roles.VIEWER)
def purge_list(request):
    runs = PurgeRun.objects.select_related("database")[:100]
    return render(request, "continuity/purge_list.html", {"runs": runs})


@roles.role_required(roles.OPERATOR)
def purge_new(request):
    """GET: the form, with the instant estimate and predicted costs of what it holds. POST: a
    preview, queued for the worker; its page shows the instant estimate, then the preview's
    progress (nothing is touched, no SCAN in this request)."""
    # GET parameters prefill the form (the review page links here per finding); one that
    # looks like a secret is left out rather than put back on the page.
    initial = {name: value for name, value in request.GET.items() if not find_secrets(value)}
    form = PurgeForm(request.POST or None, initial=initial)
    error, status = "", 400 if request.method == "POST" else 200
    if request.method == "POST" and form.is_valid():
        blocking = purge.blocking_run(form.cleaned_data["database"])
        try:
            if blocking is not None:  # before any preview: this purge could not run anyway
                raise purge.PurgeRefused(purge.describe_blocking(blocking))
            run = purge.request_preview(**form.target_args(), actor=request.user)
            return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)
        except purge.PurgeRefused as exc:
            error = str(exc)
        except jobs.EnqueueRefused as exc:  # the run is recorded failed with the reason
            error, status = str(exc), 503
        except Exception as exc:  # noqa: BLE001 — Redis errors, in the operator's words
            error = keyspace.describe_error(exc)
    elif form.errors:
        # Field errors never quote a refused value (RefuseSecretsMixin), so they can be shown.
        error = " ".join(message for messages in form.errors.values() for message in messages)
    context = {"form": form, "error": error}
    if request.method == "GET" and initial:
        context.update(_estimate(PurgeForm(initial), request))
    return render(request, "continuity/purge_new.html", context, status=status)


def _estimate(form, request):
    """{"estimate": an unsaved run with its instant estimate, or "estimate_error"} for the
    scope `form` holds (at most one DBSIZE per primary; nothing saved, no SCAN)."""
    if not form.is_valid():
        return {}
    try:
        run = purge.new_run(**form.target_args(), actor=request.user)
        return {"estimate": run, "estimate_scope": purge.scope_of(run)}
    except purge.PurgeRefused as exc:
        return {"estimate_error": str(exc)}
    except Exception as exc:  # noqa: BLE001 — Redis errors, in the operator's words
        return {"estimate_error": keyspace.describe_error(exc)}


@roles.role_required(roles.OPERATOR)
@vary_on_headers("HX-Request")
def purge_estimate(request):
    """The form's estimate region, as the operator fills it in: the scope, the keys it
    reaches, those the action would change (a sampled review's with their interval) and
    what the preview and the purge will cost, before the preview runs."""
    return render(request, "continuity/purge_new.html#estimate", _estimate(PurgeForm(request.GET), request))


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
            "namespaces": namespaces, "reviewed": bool(reviewed), "stalled": stalled, "scope": purge.scope_of(run),
            "never_started": run.never_started(), **extra}


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
            purge.enqueue_purge(run)
    except purge.PurgeRefused as exc:
        return render(request, "continuity/purge_detail.html", _detail_context(run, error=str(exc), form=form),
                      status=400)
    except jobs.EnqueueRefused as exc:  # recorded failed, audited: the page says why and what next
        run.refresh_from_db()
        return render(request, "continuity/purge_detail.html", _detail_context(run, error=str(exc)), status=503)
    return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)


@roles.role_required(roles.OPERATOR)
@require_POST
def purge_resume(request, pk):
    """Hand a stalled purge (its worker died) to a worker again; audited."""
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    try:
        with transaction.atomic():
            purge.resume_purge(run=run, request=request)
            purge.enqueue_purge(run, resumed=True)
    except purge.PurgeRefused as exc:
        return render(request, _fragment(run), _detail_context(run, error=str(exc)), status=409)
    except jobs.EnqueueRefused as exc:
        return render(request, _fragment(run), _detail_context(run, error=str(exc)), status=503)
    return HttpResponseClientRedirect(run.get_absolute_url()) if request.htmx else redirect(run)


@roles.role_required(roles.OPERATOR)
@require_POST
def purge_retry(request, pk):
    """Send again a preview or a confirmed purge that no worker started ("never started")."""
    run = get_object_or_404(PurgeRun.objects.select_related("database"), pk=pk)
    try:
        purge.retry_purge(run=run, request=request)
    except purge.PurgeRefused as exc:
        return render(request, _fragment(run), _detail_context(run, error=str(exc)), status=409)
    except jobs.EnqueueRefused as exc:
        run.refresh_from_db()
        return render(request, "continuity/purge_detail.html", _detail_context(run, error=str(exc)), status=503)
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
