"""Secrets tracked by 1Password reference, their rotation history and the env vars that carry them."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from dashboard.models.core import RedisDatabase, env_var_name
from dashboard.references import parse_reference, refusal, validate_reference
from dashboard.scanning import find_secrets, validate_no_secret


class ReferenceParts(models.Model):
    """A 1Password reference and its parsed parts, kept beside the raw string."""

    reference = models.CharField(max_length=500, blank=True, validators=[validate_reference],
                                 help_text="1Password secret reference, e.g. op://vault/item/field")
    ref_vault = models.CharField(max_length=200, blank=True, editable=False)
    ref_item = models.CharField(max_length=200, blank=True, editable=False)
    ref_section = models.CharField(max_length=200, blank=True, editable=False)
    ref_field = models.CharField(max_length=200, blank=True, editable=False)
    ref_attribute = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        abstract = True

    def set_reference(self, raw):
        """Store `raw` and its parts; raises ValidationError (without echoing it) when invalid."""
        parts = parse_reference(raw).parts() if raw else dict.fromkeys(
            ("ref_vault", "ref_item", "ref_section", "ref_field", "ref_attribute"), "")
        self.reference = (raw or "").strip()
        for name, value in parts.items():
            setattr(self, name, value)

    def save(self, *args, **kwargs):
        # The parts always follow the raw string, whichever path set it; an invalid
        # reference cannot reach the table even when form validation was skipped.
        self.set_reference(self.reference)
        super().save(*args, **kwargs)


class SecretQuerySet(models.QuerySet):
    def with_next_due(self):
        """Annotate `next_due` (last rotation + interval) so lists can sort in Postgres."""
        interval = models.Func(models.F("rotation_interval_days"), function="make_interval",
                               template="make_interval(days => %(expressions)s)",
                               output_field=models.DurationField())
        return self.annotate(next_due_at=models.ExpressionWrapper(
            models.F("last_rotated") + interval, output_field=models.DateTimeField()))

    def sorted_by(self, key):
        """Sort by `next_due` or `age` (oldest rotation first); prefix '-' to reverse.
        Never-rotated secrets come first: they are the least known."""
        qs = self.with_next_due()
        descending = key.startswith("-")
        field = {"next_due": "next_due_at", "age": "last_rotated", "name": "name"}.get(key.lstrip("-"), "next_due_at")
        expr = models.F(field)
        if field == "name":
            return qs.order_by(expr.desc() if descending else expr.asc())
        if descending:
            return qs.order_by(expr.desc(nulls_last=True), "name")
        return qs.order_by(expr.asc(nulls_first=True), "name")


class Secret(ReferenceParts):
    """A credential Lucia uses, recorded by where it lives in 1Password — never by value.

    `last_rotated` is set only by recording a rotation; the status follows from the policy
    (interval, due-soon lead time) and from `exposed_at`.
    """

    NEVER_ROTATED, OK, DUE_SOON, OVERDUE, EXPOSED = "never_rotated", "ok", "due_soon", "overdue", "exposed"
    STATUSES = [(NEVER_ROTATED, "Never rotated"), (OK, "OK"), (DUE_SOON, "Due soon"),
                (OVERDUE, "Overdue"), (EXPOSED, "Exposed")]

    name = models.SlugField(max_length=100, unique=True, help_text="Short id, e.g. lucia-rest-token")
    title = models.CharField(max_length=200, blank=True, help_text="As the runbook names it, e.g. REST token")
    purpose = models.TextField(blank=True, validators=[validate_no_secret], verbose_name="what it is for")
    database = models.ForeignKey(RedisDatabase, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="secrets")
    owner = models.CharField(max_length=150, blank=True, validators=[validate_no_secret])
    rotation_interval_days = models.PositiveIntegerField(default=90, validators=[MinValueValidator(1)])
    due_soon_days = models.PositiveIntegerField(default=14, verbose_name="due-soon lead time (days)")
    notes = models.TextField(blank=True, validators=[validate_no_secret])
    last_rotated = models.DateTimeField(null=True, blank=True, editable=False)
    exposed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The last status an alert went out for: alerts fire once per transition.
    alerted_status = models.CharField(max_length=16, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("dashboard:secret_detail", args=[self.name])

    def is_exposed(self):
        return bool(self.exposed_at and (not self.last_rotated or self.last_rotated < self.exposed_at))

    def next_due(self):
        """When the next rotation is due: now if exposed, None if never rotated."""
        if self.is_exposed():
            return self.exposed_at
        if not self.last_rotated:
            return None
        return self.last_rotated + timedelta(days=self.rotation_interval_days)

    def age(self, now=None):
        """Time since the last rotation, or None."""
        if not self.last_rotated:
            return None
        return (now or timezone.now()) - self.last_rotated

    def rotation_status(self, now=None):
        """One of never_rotated, ok, due_soon, overdue, exposed."""
        now = now or timezone.now()
        if self.is_exposed():
            return self.EXPOSED
        due = self.next_due()
        if due is None:
            return self.NEVER_ROTATED
        if now >= due:
            return self.OVERDUE
        if now >= due - timedelta(days=self.due_soon_days):
            return self.DUE_SOON
        return self.OK

    def status_label(self, now=None):
        return dict(self.STATUSES)[self.rotation_status(now)]

    def needs_attention(self, now=None, within=timedelta(days=7)):
        """Exposed, overdue, never rotated, or due within `within` (the home page's list)."""
        now = now or timezone.now()
        status = self.rotation_status(now)
        if status in (self.EXPOSED, self.OVERDUE, self.NEVER_ROTATED):
            return True
        return self.next_due() <= now + within

    def blast_radius(self):
        """(env vars carrying this secret, databases using it): what a rotation must update."""
        env_vars = list(self.env_vars.order_by("name"))
        names = {env.name for env in env_vars}
        databases = RedisDatabase.objects.filter(
            models.Q(pk=self.database_id) | models.Q(url_env__in=names) | models.Q(readonly_url_env__in=names)
        ).distinct().order_by("name")
        return env_vars, list(databases)


class Rotation(ReferenceParts):
    """One recorded rotation of a secret. Append-only: Postgres refuses UPDATE and DELETE."""

    secret = models.ForeignKey(Secret, on_delete=models.PROTECT, related_name="rotations")
    rotated_at = models.DateTimeField(default=timezone.now, db_index=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    recorded_by_label = models.CharField(max_length=150)
    verified_how = models.TextField(validators=[validate_no_secret], verbose_name="how it was verified")
    note = models.TextField(blank=True, validators=[validate_no_secret])
    source = models.CharField(max_length=16, default="web")

    class Meta:
        ordering = ["-rotated_at", "-id"]

    def __str__(self):
        return f"{self.secret.name} rotated {self.rotated_at:%Y-%m-%d}"


# Name parts that mark an env var as carrying a secret.
_SECRET_NAME_PARTS = {"TOKEN", "TOKENS", "PASSWORD", "PASSWD", "PWD", "PASS", "SECRET", "SECRETS", "KEY",
                      "APIKEY", "AUTH", "CREDENTIAL", "CREDENTIALS", "PRIVATE", "SIGNATURE", "CERT"}
# "KEY" followed by these is a name, not a key (REDIS_KEY_PREFIX).
_NOT_SECRET_AFTER_KEY = {"PREFIX", "PATTERN", "NAME", "SPACE", "COUNT", "TTL"}


def name_carries_secret(name):
    """True when an env var name says it holds a secret (…TOKEN, …PASSWORD, …KEY, …)."""
    parts = re.split(r"[_\W]+", name.upper())
    for index, part in enumerate(parts):
        if part in _SECRET_NAME_PARTS:
            following = parts[index + 1] if index + 1 < len(parts) else ""
            if part == "KEY" and following in _NOT_SECRET_AFTER_KEY:
                continue
            return True
    return False


class EnvVar(ReferenceParts):
    """An environment variable Lucia or the dashboard reads: its value when harmless (a URL
    without password), otherwise a 1Password reference in `reference`."""

    USED_IN = ["Engine", "Dashboard", "Worker", "Beat", "Local"]

    name = models.CharField(max_length=100, unique=True, validators=[env_var_name])
    value_or_reference = models.CharField(
        max_length=500, blank=True, verbose_name="value / reference",
        help_text="A 1Password reference (op://…) or, for non-secret names, a plain value such as a URL without password.",
    )
    used_in = ArrayField(models.CharField(max_length=32), default=list, blank=True,
                         help_text="Where it is read, e.g. Engine, Dashboard, Worker.")
    required = models.BooleanField(default=True)
    secret = models.ForeignKey(Secret, null=True, blank=True, on_delete=models.SET_NULL, related_name="env_vars",
                               help_text="The secret this variable carries, if any.")
    notes = models.TextField(blank=True, validators=[validate_no_secret])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "environment variable"

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("dashboard:envvar_detail", args=[self.name])

    def carries_secret(self):
        return name_carries_secret(self.name) or self.secret_id is not None

    def clean(self):
        value = (self.value_or_reference or "").strip()
        self.value_or_reference = value
        if not value:
            self.reference = ""
            return
        if value.startswith("op://"):
            try:
                parse_reference(value)
            except ValidationError as error:
                raise ValidationError({"value_or_reference": error}) from None
            self.reference = value
            return
        self.reference = ""
        if self.carries_secret():
            raise ValidationError({"value_or_reference": refusal(
                f"{self.name or 'This variable'} carries a secret, so it accepts only a reference.")})
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme and parts.password:
            raise ValidationError({"value_or_reference": refusal(
                "A URL with a password in it is a secret. Record the URL without the password "
                "(rediss://default@host:6379) or a reference.")})
        if find_secrets(value):
            raise ValidationError({"value_or_reference": refusal("This value looks like a secret.")})

    def save(self, *args, **kwargs):
        value = (self.value_or_reference or "").strip()
        self.reference = value if value.startswith("op://") else ""
        super().save(*args, **kwargs)
