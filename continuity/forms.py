"""Forms of the keyspace side."""

import re

from django import forms
from django_celery_beat.models import IntervalSchedule

from continuity import crontabs, keyspace
from continuity.humanize import DURATION_HELP, exact_duration, parse_duration
from continuity.models import Namespace
from dashboard.form_scanning import RefuseSecretsMixin
from dashboard.scanning import validate_no_secret

FINDING_CHOICES = [("", "every key"), (keyspace.ANY_FINDING, "any finding"), ("no_ttl", "no TTL"),
                   ("ttl_above_max", "TTL above the maximum"), ("oversized", "oversized"),
                   ("wrong_type", "wrong type"), ("unknown_namespace", "in no namespace")]
TYPE_CHOICES = [("", "any type"), ("string", "string"), ("hash", "hash"), ("list", "list"), ("set", "set"),
                ("zset", "sorted set"), ("stream", "stream"), ("ReJSON-RL", "JSON")]


class BrowseForm(forms.Form):
    """A literal prefix (escaped by the app) or, as an explicit advanced option, a raw
    MATCH glob; a type filter; and the cursor state of a continued scan."""

    prefix = forms.CharField(required=False, strip=False, max_length=1024)
    type = forms.ChoiceField(choices=TYPE_CHOICES, required=False)
    # Keys showing a finding of their namespace's policy, within the same scan budget.
    finding = forms.ChoiceField(required=False, label="Finding", choices=FINDING_CHOICES)
    glob = forms.BooleanField(required=False, label="Raw glob (advanced)")
    pattern = forms.CharField(required=False, strip=False, max_length=1024, label="MATCH glob")
    # A server's SCAN cursor (digits), or a cluster scan's composite cursor (a signed token,
    # checked by `keyspace.scan_keys`): anything else is refused here, never echoed.
    cursor = forms.CharField(required=False, max_length=keyspace.primaries.MAX_CURSOR_LENGTH,
                             widget=forms.HiddenInput)
    examined = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    matched = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    read = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    STATE_FIELDS = ("cursor", "examined", "matched", "read")
    _TOKEN = re.compile(r"[A-Za-z0-9_\-:]+")

    def clean_cursor(self):
        cursor = self.cleaned_data.get("cursor") or ""
        if not cursor:
            return 0
        if cursor.isascii() and cursor.isdigit():
            return int(cursor)
        if not self._TOKEN.fullmatch(cursor):
            raise forms.ValidationError(keyspace.primaries.MALFORMED)
        return cursor

    def state_error(self):
        """The operator-facing message when the scan state (cursor, counts) of a continue
        link is malformed: a 400, not a silently empty page."""
        if not any(name in self.errors for name in self.STATE_FIELDS):
            return ""
        if "cursor" in self.errors:
            return keyspace.primaries.MALFORMED
        return "The scan counts in this link are malformed. No key was read; start the scan again."

    def clean(self):
        data = super().clean()
        if data.get("glob") and not data.get("pattern"):
            self.add_error("pattern", "Enter a glob, or untick the raw glob option to use a literal prefix.")
        return data

    def match(self):
        """The MATCH pattern as bytes: the raw glob when asked for, else the escaped prefix."""
        if self.cleaned_data.get("glob"):
            return self.cleaned_data["pattern"].encode()
        return keyspace.match_pattern((self.cleaned_data.get("prefix") or "").encode())

    def scan_state(self):
        return {"cursor": self.cleaned_data.get("cursor") or 0,
                "examined_before": self.cleaned_data.get("examined") or 0,
                "matched_before": self.cleaned_data.get("matched") or 0,
                "read_before": self.cleaned_data.get("read") or 0,
                "finding": self.cleaned_data.get("finding") or ""}


class TTLField(forms.Field):
    """A TTL typed as a duration — 15m, 1h, 7d, 1h 30m, or seconds — stored as seconds
    (`humanize.parse_duration`, the one parser of every TTL field), shown the same way
    (`humanize.exact_duration`), between 1 second and `max_value`."""

    widget = forms.TextInput

    def __init__(self, *, max_value=keyspace.actions.MAX_TTL_SECONDS, **kwargs):
        kwargs.setdefault("help_text", DURATION_HELP)
        super().__init__(**kwargs)
        self.max_value = max_value

    def widget_attrs(self, widget):
        return {**super().widget_attrs(widget), "placeholder": "15m, 1h, 7d", "autocomplete": "off",
                "spellcheck": "false"}

    def prepare_value(self, value):
        return exact_duration(value) if isinstance(value, int) else value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise forms.ValidationError(DURATION_HELP) from None
        if seconds < 1:
            raise forms.ValidationError("A TTL must be at least 1 second.")
        if self.max_value and seconds > self.max_value:
            raise forms.ValidationError(f"At most {exact_duration(self.max_value)}.")
        return seconds


class LookupForm(forms.Form):
    id = forms.CharField(max_length=512, strip=True, label="ID")


class KeyActionForm(RefuseSecretsMixin, forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in keyspace.ACTIONS])
    seconds = TTLField(required=False, label="TTL")
    # Only an admin may set a TTL above the namespace's maximum, and only with a reason
    # (`operations.key_actions.act_on_key` decides; the reason goes into the audit log).
    reason = forms.CharField(required=False, max_length=500, label="Reason (admins, above the maximum)")

    def clean(self):
        data = super().clean()
        if data.get("action") in ("set_ttl", "extend_ttl") and not data.get("seconds"):
            self.add_error("seconds", "Enter a TTL such as 15m, 1h or 7d (or a number of seconds).")
        return data


class PurgeConfirmForm(RefuseSecretsMixin, forms.Form):
    """The retyped target and the reason of a purge. The reason goes into the audit log, so it
    is scanned like any free text; so is the confirmation, which can only match a target that
    passed the scanner when the run was created (`purge.preview.decide_target`)."""

    confirmation = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False, max_length=2000, validators=[validate_no_secret], widget=forms.Textarea)


class NamespaceForm(RefuseSecretsMixin, forms.ModelForm):
    min_ttl_seconds = TTLField(required=False, label="Minimum TTL", max_value=2**31 - 1,
                               help_text="Writes below it are refused. " + DURATION_HELP)
    max_ttl_seconds = TTLField(required=False, label="Maximum TTL", max_value=2**31 - 1,
                               help_text="Keys above it, and keys without a TTL where one is required, are findings. "
                                         + DURATION_HELP)

    class Meta:
        model = Namespace
        fields = ["name", "prefix", "purpose", "expected_type", "min_ttl_seconds", "max_ttl_seconds",
                  "ttl_required", "max_payload_bytes", "fallback_note", "violation_action", "sensitive"]
        widgets = {"fallback_note": forms.Textarea(attrs={"rows": 3})}
        labels = {"min_ttl_seconds": "Minimum TTL (seconds)", "max_ttl_seconds": "Maximum TTL (seconds)",
                  "ttl_required": "TTL required", "max_payload_bytes": "Maximum payload (bytes)"}

    def __init__(self, *args, database, **kwargs):
        super().__init__(*args, **kwargs)
        self.database = database
        self.instance.database = database

    def clean_prefix(self):
        self.instance.prefix = prefix = self.cleaned_data["prefix"]
        problem = self.instance.prefix_problem()
        if problem:
            raise forms.ValidationError(problem)
        return prefix

    def clean_name(self):
        name = self.cleaned_data["name"]
        if Namespace.objects.filter(database=self.database, name=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("Another namespace of this database has that name.")
        return name

    def clean(self):
        data = super().clean()
        low, high = data.get("min_ttl_seconds"), data.get("max_ttl_seconds")
        if low and high and low > high:
            self.add_error("min_ttl_seconds", "The minimum TTL is above the maximum.")
        if data.get("violation_action") == Namespace.APPLY_TTL and not high:
            self.add_error("violation_action", "Applying the policy TTL needs a maximum TTL.")
        return data


class ScheduleForm(RefuseSecretsMixin, forms.Form):
    """Edit a django-celery-beat PeriodicTask: enabled, and an interval or a crontab."""

    INTERVAL, CRONTAB = "interval", "crontab"
    enabled = forms.BooleanField(required=False)
    kind = forms.ChoiceField(choices=[(INTERVAL, "Every…"), (CRONTAB, "Crontab")])
    every = forms.IntegerField(min_value=1, required=False)
    # No microseconds: beat ticks a few times a minute, and an interval is at least a minute.
    period = forms.ChoiceField(choices=[(value, label) for value, label in IntervalSchedule.PERIOD_CHOICES
                                        if value != IntervalSchedule.MICROSECONDS], required=False)
    minute = forms.CharField(max_length=240, required=False, initial="*")
    hour = forms.CharField(max_length=96, required=False, initial="*")
    day_of_week = forms.CharField(max_length=64, required=False, initial="*")
    day_of_month = forms.CharField(max_length=124, required=False, initial="*")
    month_of_year = forms.CharField(max_length=64, required=False, initial="*")

    CRON_FIELDS = crontabs.FIELDS
    # Beat ticks a few times a minute at best; past a year, an interval is a typo (and a huge
    # one overflows the database column or timedelta).
    PERIOD_SECONDS = {IntervalSchedule.DAYS: 86400, IntervalSchedule.HOURS: 3600, IntervalSchedule.MINUTES: 60,
                      IntervalSchedule.SECONDS: 1}
    MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS = 60, 366 * 86400

    @classmethod
    def for_task(cls, task, data=None):
        initial = {"enabled": task.enabled, "kind": cls.CRONTAB if task.crontab_id else cls.INTERVAL}
        if task.interval_id:
            initial.update(every=task.interval.every, period=task.interval.period)
        if task.crontab_id:
            initial.update({f: getattr(task.crontab, f) for f in cls.CRON_FIELDS})
        return cls(data=data, initial=initial)

    def initial_data(self):
        """The initial values as form data (the stored schedule, priced when the page opens)."""
        data = {name: value for name, value in self.initial.items() if name != "enabled"}
        return {**data, **({"enabled": "on"} if self.initial.get("enabled") else {})}

    def clean(self):
        data = super().clean()
        if data.get("kind") == self.INTERVAL:
            if not data.get("every") or not data.get("period"):
                raise forms.ValidationError("Give a number and a unit for the interval.")
            seconds = data["every"] * self.PERIOD_SECONDS[data["period"]]
            if not self.MIN_INTERVAL_SECONDS <= seconds <= self.MAX_INTERVAL_SECONDS:
                raise forms.ValidationError("An interval must be between 1 minute and 366 days.")
        elif data.get("kind") == self.CRONTAB:
            # A field left empty means every value, as in the form's initial "*". A field
            # refused for its length (max_length) is absent here and already has its error.
            fields = {f: (data[f] or "*") for f in self.CRON_FIELDS if f in data}
            if len(fields) == len(self.CRON_FIELDS):
                try:
                    crontabs.check(fields)
                except forms.ValidationError as exc:
                    self.add_error(None, exc)
                    return data
                data.update(fields)
        return data

    def unsaved(self):
        """The validated schedule as an unsaved IntervalSchedule or CrontabSchedule, to price
        it before it is saved (`costs.runs_per_month_of`): {"interval": …} or {"crontab": …}."""
        from django_celery_beat.models import CrontabSchedule

        data = self.cleaned_data
        if data["kind"] == self.INTERVAL:
            return {"interval": IntervalSchedule(every=data["every"], period=data["period"])}
        return {"crontab": CrontabSchedule(**{f: data[f] for f in self.CRON_FIELDS})}

    def schedule(self):
        """The validated change as keyword arguments of `configuration.update_schedule`."""
        data = self.cleaned_data
        if data["kind"] == self.INTERVAL:
            return {"enabled": data["enabled"], "interval": (data["every"], data["period"])}
        return {"enabled": data["enabled"], "crontab": {f: data[f] for f in self.CRON_FIELDS}}
