"""Alert channels (generic JSON webhook, Slack-compatible) and the deliveries queued to them."""

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url


class AlertChannelQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)


class AlertChannel(models.Model):
    """Where alerts go. A channel that keeps failing after retries is marked `failing`
    (it stays enabled: the next successful delivery or test clears the mark)."""

    WEBHOOK, SLACK = "webhook", "slack"
    KINDS = [(WEBHOOK, "Generic JSON webhook"), (SLACK, "Slack-compatible webhook")]

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=KINDS, default=WEBHOOK)
    # A Slack webhook URL is itself a credential: shown to admins only, masked in the audit log.
    url = models.URLField(max_length=500, verbose_name="webhook URL")
    enabled = models.BooleanField(default=True)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AlertChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def is_failing(self):
        return self.failing_since is not None

    def clean(self):
        from dashboard.webhooks import url_problem

        problem = url_problem(self.url) if self.url else ""
        if problem:
            raise ValidationError({"url": f"Refused: {problem}."})

    def masked_url(self):
        """Scheme, host and port only: enough to recognise the channel, nothing to abuse. Read
        by urllib3, as the HTTP client reads it, so the page shows where a send would go."""
        try:
            parts = parse_url(self.url)
        except LocationParseError:
            return "(not a valid URL)"
        return f"{parts.scheme}://{parts.netloc or ''}/…"

    def audit_snapshot(self):
        return {"name": self.name, "kind": self.kind, "url": self.masked_url(), "enabled": self.enabled}

    def payload(self, *, event, title, text, severity, link):
        """The JSON body this channel's kind expects."""
        if self.kind == self.SLACK:
            body = f"*{title}*\n{text}" + (f"\n<{link}|Open in the dashboard>" if link else "")
            return {"text": body}
        return {"event": event, "title": title, "text": text, "severity": severity, "link": link,
                "sent_at": timezone.now().isoformat()}


class AlertDelivery(models.Model):
    """One alert queued to one channel, with its attempts."""

    QUEUED, SENT, FAILED = "queued", "sent", "failed"
    STATUSES = [(QUEUED, "Queued"), (SENT, "Sent"), (FAILED, "Failed")]

    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=100)
    title = models.CharField(max_length=300)
    text = models.TextField(blank=True)
    severity = models.CharField(max_length=16, default="warning")
    link = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self):
        return f"{self.event} → {self.channel}"
