"""Permissions, the audit log and Redis database records."""

import os

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from dashboard.scanning import validate_no_secret


class Access(models.Model):
    """Carries the dashboard's three permissions; it has no table and no rows.

    Roles are groups holding these permissions (see `dashboard.roles`).
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("read", "Read records, keyspace, jobs and audit"),
            ("operate", "Edit records and policies, record rotations, start reviews and purges"),
            ("administer", "Manage users and roles, schedules and alert channels"),
        ]


class AuditEntryQuerySet(models.QuerySet):
    def filtered(self, *, actor="", action="", target="", since=None, until=None):
        qs = self
        if actor:
            qs = qs.filter(actor_label__icontains=actor)
        if action:
            qs = qs.filter(action__istartswith=action)
        if target:
            qs = qs.filter(models.Q(target_label__icontains=target) | models.Q(target_id=target))
        if since:
            qs = qs.filter(created_at__gte=since)
        if until:
            qs = qs.filter(created_at__lt=until)
        return qs


class AuditEntry(models.Model):
    """One change, append-only: Postgres refuses UPDATE and DELETE on this table."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # PROTECT: an account with history is deactivated, never deleted (deleting would
    # need an UPDATE here, which the trigger refuses).
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_label = models.CharField(max_length=150, help_text="Username, or the command/task that acted.")
    source = models.CharField(max_length=16, default="web")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    target_label = models.CharField(max_length=500, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    note = models.TextField(blank=True)
    # The server's id of the request (entries of one request share it); the client's own
    # X-Request-ID apart, never used to group (dashboard.middleware.RequestIdMiddleware).
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    client_request_id = models.CharField(max_length=64, blank=True, verbose_name="client's request id")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.target_label}"

    def changes(self):
        """(field, before, after) for every field that differs."""
        before, after = self.before or {}, self.after or {}
        keys = sorted(set(before) | set(after))
        return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]


class RedisDatabaseQuerySet(models.QuerySet):
    def on_keyspace_of(self, database, addresses=()):
        """The records that reach the same Redis keyspace as `database` (itself included when
        saved): those sharing a URL variable, or whose URL variables resolve to the same
        target (`RedisDatabase.keyspace_marks`), or to one of `addresses` ("host:port": the
        nodes of `database`'s Redis Cluster, any of which a record may name). Read from the
        environment now, so two records that a deploy pointed at one server are found on the
        next call."""
        from dashboard.env import keyspace_target

        marks = database.keyspace_marks()
        marks |= {("target", *keyspace_target(f"redis://{address}/0")) for address in addresses}
        return [other for other in self.order_by("name") if other.pk == database.pk and database.pk
                or marks & other.keyspace_marks()]


env_var_name = RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "Use an environment variable name such as REDIS_URL.")


class RedisDatabase(models.Model):
    """A Redis database the dashboard monitors. Holds no secret: the connection URL is
    read at connect time from the environment variable named in `url_env`."""

    ENVIRONMENTS = [("production", "Production"), ("staging", "Staging"), ("development", "Development")]

    name = models.SlugField(max_length=64, unique=True)
    environment = models.CharField(max_length=16, choices=ENVIRONMENTS, default="production")
    provider = models.CharField(max_length=64, default="Upstash")
    region = models.CharField(max_length=64, blank=True)
    # Validated like free text too: a URL with a password in it is a secret.
    rest_url = models.URLField(blank=True, verbose_name="REST URL", validators=[validate_no_secret])
    tcp_endpoint = models.CharField(max_length=255, blank=True, verbose_name="TCP endpoint",
                                    validators=[validate_no_secret])
    read_regions = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    key_prefix = models.CharField(max_length=64, default="lucia:")
    url_env = models.CharField(
        max_length=64, default="REDIS_URL", validators=[env_var_name],
        verbose_name="URL env var", help_text="Environment variable holding the connection URL.",
    )
    readonly_url_env = models.CharField(
        max_length=64, blank=True, validators=[env_var_name], verbose_name="read-only URL env var",
        help_text="Optional: the URL of a browse/review user (reads, SCAN, read-only scripts; see "
                  "docs/redis-acl.md), used for browsing, reviews and previews. Not Upstash's default_ro "
                  "token: it may not SCAN or EVAL.",
    )
    rest_url_env = models.CharField(
        max_length=64, blank=True, validators=[env_var_name], verbose_name="REST URL env var",
        help_text="Optional: the variable holding Upstash's REST URL (e.g. UPSTASH_REDIS_REST_URL). Used, with the "
                  "REST token variable, when the URL env var is unset or empty.",
    )
    rest_token_env = models.CharField(
        max_length=64, blank=True, validators=[env_var_name], verbose_name="REST token env var",
        help_text="Optional: the variable holding the REST token (e.g. UPSTASH_REDIS_REST_TOKEN). Upstash's "
                  "read-only token may not SCAN or run scripts: browsing, reviews and purges need the standard token "
                  "(or an ACL user's, from ACL RESTTOKEN).",
    )
    # "auto" asks the server (INFO cluster); a declared mode that the server contradicts is
    # refused, so a wrong record can never turn a cluster into a silent one-node answer.
    AUTO, STANDALONE, CLUSTER = "auto", "standalone", "cluster"
    CLUSTER_MODES = [(AUTO, "Detect (INFO cluster)"), (STANDALONE, "Standalone"), (CLUSTER, "Redis Cluster")]
    cluster_mode = models.CharField(
        max_length=16, choices=CLUSTER_MODES, default=AUTO, verbose_name="cluster mode",
        help_text="Detect asks the server (INFO cluster). Declare a mode where the server refuses INFO; "
                  "a declared mode the server contradicts is refused.",
    )
    notes = models.TextField(blank=True, validators=[validate_no_secret])
    # Failure plan: what happens when this database is down, and the TTL design notes.
    if_down = models.TextField(blank=True, validators=[validate_no_secret], verbose_name="if Redis is down")
    lucia_should = models.TextField(blank=True, validators=[validate_no_secret], verbose_name="Lucia should")
    operator_impact = models.TextField(blank=True, validators=[validate_no_secret])
    alerting_path = models.TextField(blank=True, validators=[validate_no_secret])
    expiry_fallback = models.TextField(
        blank=True, validators=[validate_no_secret], verbose_name="fallback behaviour if expired",
        help_text="TTL design note: what Lucia does when a key has expired.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    FAILURE_PLAN_FIELDS = ("if_down", "lucia_should", "operator_impact", "alerting_path", "expiry_fallback")
    # What bounds every namespace and purge of the keyspace: only an admin sets or changes
    # them, with a reason (`dashboard.operations.save_database`).
    GUARDED_FIELDS = ("key_prefix", "url_env", "readonly_url_env", "rest_url_env", "rest_token_env")

    objects = RedisDatabaseQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def bills_per_command(self):
        """True for a provider that bills every command (Upstash): jobs read only what the
        namespace policies need and avoid scripts that lock the whole database."""
        return "upstash" in (self.provider or "").lower()

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("dashboard:database_detail", args=[self.name])

    def url_env_problems(self):
        """{field: why} for URL variables that cannot hold this database's Redis URL (the
        dashboard's own DATABASE_URL, PATH, a variable holding a postgres:// URL...). The
        value is checked for its scheme only, never echoed."""
        from dashboard.env import redis_url_env_problem, rest_token_env_problem, rest_url_env_problem

        checks = {"url_env": redis_url_env_problem, "readonly_url_env": redis_url_env_problem,
                  "rest_url_env": rest_url_env_problem, "rest_token_env": rest_token_env_problem}
        problems = {}
        for field, check in checks.items():
            name = getattr(self, field)
            if name:
                problem = check(name) if env_var_name.regex.match(name) else f"{name} is not a variable name"
                if problem:
                    problems[field] = problem
        if bool(self.rest_url_env) != bool(self.rest_token_env):
            problems.setdefault("rest_token_env" if self.rest_url_env else "rest_url_env",
                                "a REST endpoint needs both its URL variable and its token variable")
        return problems

    def keyspace_marks(self):
        """What identifies the keys this record reaches: the names of its URL variables (Redis
        and REST) and, where they hold a URL, each URL's canonical target
        (`dashboard.env.keyspace_target`, `rest_target`) and, on Upstash, the database's host
        (its TCP and REST endpoints share it). Records sharing any mark monitor the same keys."""
        from dashboard.env import keyspace_target, redis_url_problem, rest_target, rest_url_problem, upstash_database

        marks = set()
        for name in filter(None, (self.url_env, self.readonly_url_env, self.rest_url_env)):
            marks.add(("variable", name))
            url = os.environ.get(name, "")
            if url and not redis_url_problem(url):
                marks.add(("target", *keyspace_target(url)))
            elif url and name == self.rest_url_env and not rest_url_problem(url):
                marks.add(rest_target(url))
            if url and upstash_database(url):
                marks.add(("upstash", upstash_database(url)))
        return marks

    def keyspace_conflict(self):
        """Why this record may not be saved as it stands, or "": another record reaches the
        same keyspace with another key prefix. Records on one keyspace share its key prefix,
        so that each one's namespaces are checked against the others'."""
        for other in RedisDatabase.objects.exclude(pk=self.pk).on_keyspace_of(self):
            if other.key_prefix != self.key_prefix:
                return (f"{other.name} already monitors this Redis keyspace with the key prefix {other.key_prefix!r}. "
                        f"Records on one keyspace share one key prefix: use {other.key_prefix!r}, or point this "
                        "record at another Redis.")
        return ""

    def configuration_problem(self):
        """"misconfigured: why" for the record's own pages, or ""."""
        problems = self.url_env_problems()
        return f"misconfigured: {'; '.join(problems.values())}." if problems else ""

    def clean(self):
        errors = {field: f"Refused: {why}." for field, why in self.url_env_problems().items()
                  if env_var_name.regex.match(getattr(self, field))}
        if not errors and (conflict := self.keyspace_conflict()):
            errors["key_prefix"] = conflict
        if errors:
            raise ValidationError(errors)
