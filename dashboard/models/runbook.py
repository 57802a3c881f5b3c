"""The runbook's remaining tables: account access, setup checklist and phase mapping."""

from django.conf import settings
from django.db import models
from django.urls import reverse

from dashboard.scanning import validate_no_secret


class AccountAccess(models.Model):
    """How the team reaches the provider's account (no password: that lives in 1Password)."""

    provider = models.CharField(max_length=64, default="Upstash")
    account_email = models.EmailField(blank=True)
    dashboard_url = models.URLField(blank=True, verbose_name="dashboard URL")
    team = models.CharField(max_length=150, blank=True, verbose_name="team / org", validators=[validate_no_secret])
    mfa_method = models.CharField(max_length=100, blank=True, verbose_name="MFA method", validators=[validate_no_secret])
    mfa_last_verified = models.DateField(null=True, blank=True, verbose_name="MFA last verified")
    notes = models.TextField(blank=True, validators=[validate_no_secret])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "id"]
        verbose_name = "account access"
        verbose_name_plural = "account access"

    def __str__(self):
        return f"{self.provider} account" + (f" ({self.team})" if self.team else "")

    def get_absolute_url(self):
        return reverse("dashboard:account_detail", args=[self.pk])


class ChecklistItemQuerySet(models.QuerySet):
    def stages(self):
        """[(stage number, stage title, items, done count)] in order, from one query."""
        titles = dict(ChecklistItem.STAGES)
        grouped = {}
        for item in self.select_related("done_by").order_by("stage", "position", "id"):
            grouped.setdefault(item.stage, []).append(item)
        return [
            {"number": number, "title": titles.get(number, f"Stage {number}"), "items": items,
             "done": sum(1 for i in items if i.done_at), "total": len(items),
             "percent": round(100 * sum(1 for i in items if i.done_at) / len(items)) if items else 0}
            for number, items in sorted(grouped.items())
        ]


class ChecklistItem(models.Model):
    """One step of the runbook's setup checklist, with who did it and when."""

    STAGES = [(1, "Stage 1 — account and DB"), (2, "Stage 2 — Lucia integration"), (3, "Stage 3 — guardrails")]

    stage = models.PositiveSmallIntegerField(choices=STAGES)
    position = models.PositiveSmallIntegerField(default=0)
    text = models.CharField(max_length=300, validators=[validate_no_secret])
    done_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                editable=False, related_name="+")
    done_at = models.DateTimeField(null=True, blank=True, editable=False)
    note = models.TextField(blank=True, validators=[validate_no_secret])

    objects = ChecklistItemQuerySet.as_manager()

    class Meta:
        ordering = ["stage", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["stage", "text"], name="checklist_unique_text")]

    def __str__(self):
        return self.text

    @property
    def is_done(self):
        return self.done_at is not None


class PhaseMapping(models.Model):
    """Which runbook phase a part of this work belongs to."""

    number = models.PositiveSmallIntegerField(unique=True)
    title = models.CharField(max_length=200, validators=[validate_no_secret])
    primary_page = models.CharField(max_length=200, blank=True, default="08 - Live Transition Runbook",
                                    verbose_name="primary runbook page")
    primary_page_url = models.URLField(blank=True, verbose_name="primary runbook page URL")
    notes = models.TextField(blank=True, validators=[validate_no_secret])

    class Meta:
        ordering = ["number"]
        verbose_name = "phase"

    def __str__(self):
        return f"Phase {self.number} — {self.title}"
