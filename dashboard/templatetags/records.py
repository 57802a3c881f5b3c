"""Template helpers of the records side: status tags and Markdown table cells."""

import re

from django import template
from django.utils.encoding import iri_to_uri
from django.utils.html import format_html

register = template.Library()

_STATUS_CLASS = {"never_rotated": "is-warning is-light", "ok": "is-success is-light", "due_soon": "is-warning",
                 "overdue": "is-danger", "exposed": "is-danger"}


@register.simple_tag
def status_tag(secret):
    """The rotation status of a secret as a coloured tag."""
    status = secret.rotation_status()
    return format_html('<span class="tag {}" data-testid="status" data-status="{}">{}</span>',
                       _STATUS_CLASS[status], status, secret.status_label())


@register.filter
def days(delta):
    """A timedelta as whole days, e.g. '37 days'."""
    if delta is None:
        return "—"
    return f"{delta.days} day{'s' if delta.days != 1 else ''}"


# Characters that start Markdown (or inline HTML) anywhere in a line: links and images need
# `[`, autolinks and HTML need `<`, entities need `&`; emphasis, code and strikethrough.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~&!])")
# At the start of the value (it always follows "- " or "| "): headings, quotes, list
# markers, setext underlines and ordered-list numbers.
_MD_START = re.compile(r"^(\s*)(?=[#>+=-])|^(\s*\d+)(?=[.)])")


def _text(value):
    if value is None or value == "":
        return ""
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@register.filter
def mdcell(value):
    """Operator-typed text as inert Markdown, safe inside a table cell or a list item: every
    Markdown-active character is backslash-escaped (no links, images, raw HTML, emphasis,
    headings), and newlines become <br> so the row or item stays one line."""
    text = _MD_INLINE.sub(r"\\\1", _text(value)).replace("\r", "")
    text = _MD_START.sub(lambda m: (m.group(1) or m.group(2) or "") + "\\", text, count=1)
    return text.replace("\n", "<br>")


@register.filter
def mdcode(value):
    """Text as a Markdown code span (for key prefixes): a backtick fence longer than any run
    inside, pipes escaped for tables, one line."""
    text = _text(value).replace("\r", "").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


@register.filter
def mdurl(value):
    """An http(s) URL as a Markdown autolink, percent-encoding what could end it early;
    anything else as inert text."""
    text = _text(value).strip()
    if not re.match(r"https?://", text, re.I) or re.search(r"\s", text):
        return mdcell(text)
    return "<" + iri_to_uri(text).replace("<", "%3C").replace(">", "%3E") + ">"
