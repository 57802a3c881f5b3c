"""Template helpers of the sources-of-truth panels."""

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()

_STATE_CLASS = {"broken": "is-danger", "changed": "is-warning", "checked": "is-success is-light"}


@register.filter
def state_class(state):
    """Bulma classes of a 1Password state's tag."""
    return _STATE_CLASS.get(state, "is-light")


@register.filter
def setting(value, field):
    """A compared Upstash setting as people read it: on/off, sizes in bytes, dollars, regions."""
    if value is None or value == "" or value == []:
        return "not recorded"
    if field in ("tls", "eviction"):
        return "on" if value else "off"
    if field in ("max_request_size", "max_entry_size"):
        return f"{filesizeformat(value)} ({value:,} bytes)"
    if field == "budget":
        return f"${value:,} a month"
    if field == "read_regions":
        return ", ".join(value)
    return str(value)


@register.filter
def dollars(amount):
    """An estimated cost: $0.42, $1,234.50."""
    return "—" if amount is None else f"${amount:,.2f}"
