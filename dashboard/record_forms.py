"""Forms of the records side. Every form here refuses a pasted secret in any field and blanks
it, so that a re-rendered form never echoes it (dashboard.form_scanning)."""

from django import forms
from django.contrib.postgres.forms import SimpleArrayField

from dashboard.models import (AccountAccess, AlertChannel, ChecklistItem, EnvVar, PhaseMapping,
                              RedisDatabase, Secret)
from dashboard import roles
from dashboard.form_scanning import RefuseSecretsMixin
from dashboard.references import validate_reference
from dashboard.scanning import validate_no_secret

def https_urls(field, **kwargs):
    """Model field → form field, with URL fields assuming https:// when no scheme is typed."""
    from django.db import models

    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class ScrubRefusedMixin(RefuseSecretsMixin):
    """Refuses and scrubs pasted secrets in every field (see form_scanning). Also gives widgets Bulma classes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            css = "input"
            if isinstance(widget, forms.Textarea):
                css = "textarea"
            elif isinstance(widget, (forms.Select, forms.CheckboxInput)):
                css = ""
            if css:
                widget.attrs["class"] = (widget.attrs.get("class", "") + " " + css).strip()


class AccountAccessForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = AccountAccess
        formfield_callback = https_urls
        fields = ["provider", "account_email", "dashboard_url", "team", "mfa_method", "mfa_last_verified", "notes"]
        widgets = {"mfa_last_verified": forms.DateInput(attrs={"type": "date"}),
                   "notes": forms.Textarea(attrs={"rows": 3})}


class RedisDatabaseForm(ScrubRefusedMixin, forms.ModelForm):
    read_regions = SimpleArrayField(forms.CharField(max_length=64), required=False,
                                    help_text="Comma-separated, e.g. us-east-1, eu-west-1")
    reason = forms.CharField(
        required=False, max_length=2000, validators=[validate_no_secret], widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when you create the record or change its key prefix or URL variables: it goes into "
                  "the audit log.")

    class Meta:
        model = RedisDatabase
        formfield_callback = https_urls
        fields = ["name", "environment", "provider", "region", "rest_url", "tcp_endpoint", "read_regions",
                  "key_prefix", "url_env", "readonly_url_env", "rest_url_env", "rest_token_env", "cluster_mode",
                  "notes",
                  *RedisDatabase.FAILURE_PLAN_FIELDS]
        widgets = {name: forms.Textarea(attrs={"rows": 2}) for name in ("notes", *RedisDatabase.FAILURE_PLAN_FIELDS)}

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        # The key prefix and the URL variables bound every namespace and purge of the
        # keyspace: only an admin sets them (`operations.save_database` enforces it). A
        # disabled field ignores whatever is posted.
        if not roles.has_role(user, roles.ADMIN):
            for name in RedisDatabase.GUARDED_FIELDS:
                self.fields[name].disabled = True
                self.fields[name].help_text = "Only an admin can change this."
        # A post without it (an older form, a script) keeps the record's mode: "auto" when new.
        self.fields["cluster_mode"].required = False

    def guarded_changes(self):
        """The guarded fields this form sets or changes (all of them for a new record)."""
        return [name for name in RedisDatabase.GUARDED_FIELDS if not self.instance.pk or name in self.changed_data]

    def clean_cluster_mode(self):
        return self.cleaned_data.get("cluster_mode") or self.instance.cluster_mode or RedisDatabase.AUTO

    def clean_key_prefix(self):
        key_prefix = self.cleaned_data["key_prefix"]
        if not key_prefix:
            raise forms.ValidationError("Enter the key prefix this database's keys start with, e.g. lucia:.")
        if self.instance.pk and key_prefix != self.instance.key_prefix:
            outside = [ns.prefix for ns in self.instance.namespaces.all()
                       if not ns.prefix.startswith(key_prefix) or ns.prefix == key_prefix]
            if outside:
                raise forms.ValidationError(
                    f"Every namespace prefix must start with the key prefix and be longer: {outside[0]!r} "
                    "would not. Change or remove those namespaces first.")
        return key_prefix

    def clean(self):
        data = super().clean()
        if self.guarded_changes() and not (data.get("reason") or "").strip() and "reason" not in self.errors:
            self.add_error("reason", "Give a reason: creating a record or changing its key prefix or URL variables "
                                     "is audited with it.")
        return data


class SecretForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = Secret
        fields = ["name", "title", "purpose", "database", "reference", "owner", "rotation_interval_days",
                  "due_soon_days", "notes"]
        widgets = {"purpose": forms.Textarea(attrs={"rows": 2}), "notes": forms.Textarea(attrs={"rows": 3}),
                   "reference": forms.TextInput(attrs={"placeholder": "op://vault/item/field", "autocomplete": "off"})}


class EnvVarForm(ScrubRefusedMixin, forms.ModelForm):
    # EnvVar.clean() refuses secrets in the value with messages specific to the variable's name.
    secret_scan_exempt = ("value_or_reference",)
    used_in = SimpleArrayField(forms.CharField(max_length=32), required=False,
                               help_text="Comma-separated tags: " + ", ".join(EnvVar.USED_IN))

    class Meta:
        model = EnvVar
        fields = ["name", "value_or_reference", "used_in", "required", "secret", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 2}),
                   "value_or_reference": forms.TextInput(attrs={"autocomplete": "off"})}


class ChecklistItemForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = ChecklistItem
        fields = ["stage", "position", "text", "note"]
        widgets = {"note": forms.Textarea(attrs={"rows": 2})}


class ChecklistToggleForm(ScrubRefusedMixin, forms.Form):
    done = forms.BooleanField(required=False)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 1}), validators=[validate_no_secret])


class PhaseMappingForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = PhaseMapping
        formfield_callback = https_urls
        fields = ["number", "title", "primary_page", "primary_page_url", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 2})}


class RotationForm(ScrubRefusedMixin, forms.Form):
    """Record a rotation: a new reference (blank keeps the same item), how it was verified, a note."""

    reference = forms.CharField(
        required=False, max_length=500, validators=[validate_reference], label="New reference",
        help_text="Leave blank when the new value was saved into the same 1Password item.",
        widget=forms.TextInput(attrs={"placeholder": "op://vault/item/field", "autocomplete": "off"}),
    )
    verified_how = forms.CharField(max_length=2000, validators=[validate_no_secret], label="How it was verified",
                                   widget=forms.Textarea(attrs={"rows": 2}),
                                   help_text="e.g. Engine redeployed, /healthz green, PING from the worker.")
    note = forms.CharField(required=False, max_length=2000, validators=[validate_no_secret],
                           widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, secret=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.secret = secret

    def clean(self):
        data = super().clean()
        if not data.get("reference") and self.secret is not None and not self.secret.reference and "reference" not in self.errors:
            self.add_error("reference", forms.ValidationError(
                "This secret has no reference yet: enter the 1Password reference of the new value.", code="required"))
        return data


class AlertChannelForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = AlertChannel
        formfield_callback = https_urls
        fields = ["name", "kind", "url", "enabled"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("https://", "http://")):
            raise forms.ValidationError("Use an http(s) webhook URL.")
        return url
