from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm

from dashboard import roles
from dashboard.form_scanning import RefuseSecretsMixin


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False)
    action = forms.CharField(required=False, help_text="Prefix, e.g. secret. or purge.")
    target = forms.CharField(required=False)
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


ROLE_CHOICES = [(r, r.capitalize()) for r in roles.ROLES]


class UserCreateForm(RefuseSecretsMixin, forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{2,150}$", max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=roles.VIEWER)

    def clean_username(self):
        name = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=name).exists():
            raise forms.ValidationError("That username is taken.")
        return name


class RoleForm(RefuseSecretsMixin, forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)
    is_active = forms.BooleanField(required=False)


class LoginForm(RefuseSecretsMixin, AuthenticationForm):
    """Sign-in. A username that looks like a secret (a token pasted in the wrong box) is refused
    before authentication: never echoed on the page, never handed to the lockout table
    (`dashboard.lockout.lockout_username` guards every other path there)."""

    secret_scan_exempt = ("password",)
    secret_refusal = ("This looks like a secret ({kinds}), not a username. It was not checked, kept or shown "
                      "again. If it was a real secret, rotate it.")
