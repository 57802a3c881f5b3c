"""Template helpers of the records side: status tags and Markdown table cells."""

from django import template
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


@register.filter
def mdcell(value):
    """Text safe inside a Markdown table cell: no pipes or newlines breaking the row."""
    if value is None or value == "":
        return ""
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")
