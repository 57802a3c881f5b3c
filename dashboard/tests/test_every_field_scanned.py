"""Every field, every path: each field of each form in `dashboard` and `continuity`, and each
argument of each of their management commands, goes through the one scanner
(`dashboard.scanning`). A secret typed into any of them is refused, never echoed, and nothing
is stored. The forms and commands are found by walking the code, so a new form, field or
argument that skips the scanner fails here."""

import importlib
import inspect
import io
import logging
import pkgutil

import pytest
from django import forms
from django.apps import apps
from django.core.management import CommandError, call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand
from django.http import QueryDict

from dashboard.form_scanning import SECRET_REFUSALS

PACKAGES = ("dashboard", "continuity")
UPSTASH = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"
GITHUB = "ghp_1234567890abcdefghijABCDEFGHIJ123456"
# (label, what is typed, the part that must never come back): a token, one inside an op://
# reference (M4), and one of the shapes the scanner used to miss (L8).
PAYLOADS = [("token", UPSTASH, UPSTASH), ("op-reference", f"op://vault/{GITHUB}/field", GITHUB),
            ("basic-auth", "Authorization: Basic dXNlcjpodW50ZXIyeHl6enk=", "dXNlcjpodW50ZXIyeHl6enk=")]

# Forms that store nothing: they look up or filter what exists, and a key name or id may
# rightly look like a token (a session id). Named here, with the reason; any other form is scanned.
READ_ONLY_FORMS = {
    "continuity.forms.BrowseForm": "browses keys by prefix or glob; stores nothing",
    "continuity.forms.LookupForm": "finds keys by id (often a session token); stores nothing",
    "dashboard.forms.AuditFilterForm": "filters the audit log; stores nothing",
}
# Fields that exist to take a secret. Named here, never only in the form's secret_scan_exempt.
SECRET_FIELDS = {
    ("dashboard.forms.LoginForm", "password"): "the password typed to sign in; never rendered back",
}
# Constructor arguments a form needs besides its data.
FORM_ARGUMENTS = {
    "continuity.forms.NamespaceForm": lambda lucia: {"database": lucia},
}


def _project_modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            parts = info.name.split(".")
            if "tests" in parts or "migrations" in parts or "devtools" in parts:
                continue  # the dev tooling starts servers: it defines no form
            yield importlib.import_module(info.name)


def project_forms():
    """{dotted name: class} of every form class defined in the project's modules."""
    found = {}
    for module in _project_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, forms.BaseForm) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


FORMS = project_forms()


def test_it_finds_every_form():
    # The walk itself must work: these are known forms of both apps, pages and sign-in.
    assert {"continuity.views.purge.PurgeForm", "continuity.forms.PurgeConfirmForm", "continuity.forms.NamespaceForm",
            "dashboard.forms.LoginForm", "dashboard.forms.UserCreateForm", "dashboard.record_forms.RedisDatabaseForm",
            "dashboard.record_forms.RotationForm"} <= set(FORMS)
    assert len(FORMS) >= 20


def test_every_exemption_still_names_a_form_and_a_field():
    assert set(READ_ONLY_FORMS) <= set(FORMS)
    for name, field in SECRET_FIELDS:
        assert field in FORMS[name].base_fields


def _posted(form, name, field, payload):
    """The form's data with `payload` typed into field `name` (each sub-input of a multi-input
    widget too), or None when the field takes no text (a checkbox, a file)."""
    key = form.add_prefix(name)
    data = QueryDict(mutable=True)
    for suffix in ("", *getattr(field.widget, "widgets_names", ())):
        data.setlist(key + suffix, [payload])
    raw = field.widget.value_from_datadict(data, {}, key)
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    return data if any(isinstance(value, str) and payload in value for value in values) else None


@pytest.mark.parametrize("form_name", sorted(set(FORMS) - set(READ_ONLY_FORMS)))
def test_every_text_field_of_every_form_refuses_a_secret_without_echo(lucia, form_name):
    cls = FORMS[form_name]
    arguments = FORM_ARGUMENTS.get(form_name, lambda lucia: {})(lucia)
    unscanned, checked = [], 0
    for name, field in cls(**arguments).fields.items():
        if (form_name, name) in SECRET_FIELDS:
            continue
        for label, payload, secret in PAYLOADS:
            data = _posted(cls(**arguments), name, field, payload)
            if data is None:
                continue
            checked += 1
            form = cls(data=data, **arguments)
            form.is_valid()
            codes = {error.code for error in form.errors.as_data().get(name, [])}
            shown = str(form.errors) + form.as_div()
            if not codes & SECRET_REFUSALS or secret in shown or name in form.cleaned_data:
                unscanned.append((name, label, sorted(map(str, codes)), "echoed" if secret in shown else "not echoed"))
    assert unscanned == [], (f"{form_name}: these fields take a secret without the scanner's refusal, or echo it "
                             "(use RefuseSecretsMixin, or name a read-only form / secret field in this test)")
    assert checked or not cls.base_fields


# --- management commands ----------------------------------------------------------------
def project_commands():
    """{name: command} of every management command of the project's apps."""
    return {name: load_command_class(app, name) for name, app in sorted(get_commands().items()) if app in PACKAGES}


COMMANDS = project_commands()
# Options every Django command has (--settings, --verbosity…): Django's own, not ours.
DJANGO_OPTIONS = {action.dest for action in BaseCommand().create_parser("manage.py", "base")._actions}


def _value_options():
    """[(command, option string)] of every option of ours that takes a value."""
    out = []
    for name, command in COMMANDS.items():
        for action in command.create_parser("manage.py", name)._actions:
            if action.option_strings and action.nargs != 0 and action.dest not in DJANGO_OPTIONS:
                out.append((name, max(action.option_strings, key=len)))
    return out


OPTIONS = _value_options()


def test_it_finds_every_command_argument():
    assert {"purge", "ensure_admin", "record_rotation", "ttl_review", "policy_purge"} <= set(COMMANDS)
    assert {("purge", "--prefix"), ("purge", "--pattern"), ("purge", "--reason"), ("purge", "--as"),
            ("ensure_admin", "--username"), ("record_rotation", "--note"), ("record_rotation", "--reference"),
            ("ttl_review", "--database")} <= set(OPTIONS)


def _harmless(action):
    if action.choices:
        return str(list(action.choices)[0])
    return "1" if action.type in (int, float) else "lucia"


def _arguments(parser, option, payload):
    """argv for `option` = `payload`, with harmless values for whatever else is required (one
    member of a required group, unless `option` belongs to it)."""
    argv = [option, payload]
    tested = next(a for a in parser._actions if option in a.option_strings)
    for group in parser._mutually_exclusive_groups:
        if group.required and tested not in group._group_actions:
            first = group._group_actions[0]
            argv += [first.option_strings[0], _harmless(first)]
    for action in parser._actions:
        if action.required and action is not tested:
            argv += [action.option_strings[0], _harmless(action)]
    return argv


def _stored():
    return {model._meta.label: model.objects.count() for model in apps.get_models() if model._meta.managed}


@pytest.mark.parametrize("command,option", OPTIONS)
def test_every_command_argument_refuses_a_secret_before_running(lucia, operator, monitored, caplog, command, option):
    caplog.set_level(logging.DEBUG)
    parser = COMMANDS[command].create_parser("manage.py", command)
    before, keys = _stored(), monitored.dbsize()
    for _, payload, secret in PAYLOADS:
        out, err = io.StringIO(), io.StringIO()
        with pytest.raises(CommandError) as caught:
            call_command(command, *_arguments(parser, option, payload), stdout=out, stderr=err)
        assert "looks like a secret" in str(caught.value), f"{command} {option}: refused for another reason or not at all"
        assert secret not in str(caught.value) + out.getvalue() + err.getvalue() + caplog.text
    assert _stored() == before and monitored.dbsize() == keys
