"""1Password secret references (`op://vault/item/[section/]field[?attribute=…]`).

The dashboard stores where a secret lives, never the secret. Every reference field goes
through `parse_reference`, which accepts only the documented syntax and keeps the parts.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from django.core.exceptions import ValidationError

from dashboard.scanning import find_secrets

# Letters, digits, `-`, `_`, `.` and spaces inside a name (not at either end), as
# 1Password's secret reference syntax allows.
# `fullmatch` and no `$`: `$` also matches before a trailing newline.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-](?:[A-Za-z0-9_. -]*[A-Za-z0-9_.-])?")
# Query parameters 1Password documents for secret references.
ATTRIBUTES = ("type", "value", "id", "purpose", "otp", "totp", "content", "size", "name")
SSH_FORMATS = ("openssh",)

EXPECTED_SHAPE = "op://vault/item/field or op://vault/item/section/field, optionally with ?attribute=otp (or type, value, id, purpose…)"


@dataclass(frozen=True)
class Reference:
    raw: str
    vault: str
    item: str
    section: str
    field: str
    attribute: str

    def parts(self):
        """The parsed parts, named as the model fields that store them."""
        return {"ref_vault": self.vault, "ref_item": self.item, "ref_section": self.section,
                "ref_field": self.field, "ref_attribute": self.attribute}


def refusal(reason):
    """A ValidationError that explains the expected shape and never quotes the input."""
    return ValidationError(f"{reason} Enter a 1Password secret reference such as {EXPECTED_SHAPE}; "
                           "never the secret itself.", code="not_a_reference")


def parse_reference(raw):
    """Parse a 1Password secret reference or raise a ValidationError that does not echo it."""
    text = (raw or "").strip()
    if not text.startswith("op://"):
        raise refusal("This is not a 1Password secret reference.")
    body, _, query = text[len("op://"):].partition("?")
    segments = body.split("/")
    if len(segments) not in (3, 4):
        raise refusal("A secret reference has 3 or 4 parts after op:// (vault, item, optional section, field).")
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise refusal("Reference parts may contain only letters, digits, '-', '_', '.' and inner spaces.")
    # A secret pasted as a vault, item or field name is still a secret (the scanner scans each
    # part of a reference too; here the refusal can say which shape was expected).
    if any(find_secrets(segment) for segment in segments):
        raise refusal("A part of this reference looks like a secret.")
    attribute = ""
    if query:
        try:
            params = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise refusal("The part after '?' is not a valid query.") from None
        for key, value in params:
            if key == "attribute" and value.lower() in ATTRIBUTES and not attribute:
                attribute = value.lower()
            elif key == "ssh-format" and value.lower() in SSH_FORMATS:
                continue
            else:
                raise refusal(f"Unknown query parameter; use attribute= one of {', '.join(ATTRIBUTES)}.")
    vault, item = segments[0], segments[1]
    section, field = (segments[2], segments[3]) if len(segments) == 4 else ("", segments[2])
    return Reference(raw=text, vault=vault, item=item, section=section, field=field, attribute=attribute)


def validate_reference(value):
    """Model/form validator for reference fields (blank is handled by `blank=`)."""
    if value:
        parse_reference(value)
