"""One mechanism for every form an operator types into: refuse a pasted secret in any field,
and never echo it back.

`RefuseSecretsMixin` scans the raw input of every field (not only the fields that carry a
`validate_no_secret` validator). A field whose input looks like a secret gets one error, the
non-echoing refusal, in place of whatever else failed first ("Enter a valid URL.", a length
limit, a choice error that quotes the value), and its bound value is blanked, so that the
re-rendered form, its messages and anything built from `cleaned_data` never hold it.
"""

from django.core.exceptions import ValidationError

from dashboard.scanning import REFUSAL, find_secrets

# Error codes that already mean "the input may be a secret" and never echo it.
SECRET_REFUSALS = {"pasted_secret", "not_a_reference"}


class RefuseSecretsMixin:
    """Put first in the bases of a Form or ModelForm. `secret_scan_exempt` names fields that
    must not be scanned (a password typed to sign in). `secret_refusal` is the message, with
    `{kinds}` for the kinds found."""

    secret_scan_exempt = ()
    secret_refusal = REFUSAL

    def _raw_text(self, name, field):
        value = field.widget.value_from_datadict(self.data, self.files, self.add_prefix(name))
        if isinstance(value, (list, tuple)):
            value = "\n".join(str(item) for item in value if item is not None)
        return value if isinstance(value, str) else ""

    def secret_kinds(self):
        """{field name: kinds of secret found in its raw input}, computed once per binding."""
        if getattr(self, "_secret_kinds_of", None) is None:
            found = {}
            if self.is_bound:
                for name, field in self.fields.items():
                    if name in self.secret_scan_exempt:
                        continue
                    kinds = find_secrets(self._raw_text(name, field))
                    if kinds:
                        found[name] = kinds
            self._secret_kinds_of = found
        return self._secret_kinds_of

    def _refuse_secrets(self):
        for name, kinds in self.secret_kinds().items():
            existing = self._errors.get(name)
            if existing and all(e.code in SECRET_REFUSALS for e in existing.as_data()):
                continue
            self._errors[name] = self.error_class(renderer=self.renderer)
            self._errors[name].extend(self._specific_refusals(name) or ValidationError(
                self.secret_refusal.format(kinds=", ".join(kinds)), code="pasted_secret").error_list)
            self.cleaned_data.pop(name, None)

    def _specific_refusals(self, name):
        """The model field's own refusals of the raw input (e.g. "not a 1Password secret
        reference"), which say more than the generic one and never echo either."""
        meta = getattr(self, "_meta", None)
        if meta is None or meta.model is None:
            return []
        try:
            model_field = meta.model._meta.get_field(name)
            model_field.run_validators(self._raw_text(name, self.fields[name]).strip())
        except ValidationError as error:
            return [e for e in error.error_list if e.code in SECRET_REFUSALS]
        except Exception:  # noqa: BLE001 — not a concrete field, or a value its validators cannot take
            return []
        return []

    def full_clean(self):
        self._secret_kinds_of = None
        super().full_clean()
        if not self.is_bound or self._errors is None:
            return
        # Again after the model's own validation, which may have added errors that echo.
        self._refuse_secrets()
        refused = [name for name, errors in self._errors.as_data().items()
                   if name in self.fields and any(e.code in SECRET_REFUSALS for e in errors)]
        if refused:
            data = self.data.copy()
            for name in refused:
                data[self.add_prefix(name)] = ""
            self.data = data

    def clean(self):
        # Before the form's cross-field checks and before a ModelForm copies values onto its
        # instance: a refused field is not in cleaned_data from here on.
        self._refuse_secrets()
        return super().clean()
