from django import template

from continuity.humanize import duration, exact_duration
from continuity.keynames import display_key

register = template.Library()


register.filter("duration", duration)
register.filter("exact_duration", exact_duration)


@register.filter
def usd(amount):
    """An estimated price: $0.0057, $5.70, $550."""
    if amount is None:
        return "—"
    if amount >= 100:
        return f"${amount:,.0f}"
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}" if amount >= 0.0001 else f"${amount:.6f}"


@register.filter
def key_token(key, database):
    """A bytes key as the path segment of its link under `database`: its base64url token, or
    a short handle bound to that record when the token would be too long for a URL (see
    continuity.key_links). `{{ key|key_token:database }}`"""
    from continuity.key_links import url_token

    return url_token(key, database)


@register.filter
def link_token(token, database):
    """`key_token` for a key given as its base64url token."""
    from continuity.key_links import url_token_for_token

    try:
        return url_token_for_token(token, database)
    except ValueError:
        return token


@register.filter
def list_key(key):
    """A bytes key as escaped text for a list page, cut after a few hundred characters."""
    from continuity.key_links import short_display

    return short_display(key)


@register.filter
def show_key(key):
    """A bytes key as escaped text (templates HTML-escape it again)."""
    return display_key(key)


@register.filter
def ttl_ms_duration(ttl_ms):
    """A TTL in milliseconds as a short duration; '—' for none."""
    if ttl_ms is None:
        return "—"
    if ttl_ms < 1000:
        return f"{ttl_ms} ms"
    return duration(ttl_ms // 1000)


@register.filter
def expires_at(ttl_ms):
    """The absolute expiry time of a TTL in milliseconds counted from now, or None."""
    from datetime import timedelta

    from django.utils import timezone

    if ttl_ms is None:
        return None
    return timezone.now() + timedelta(milliseconds=ttl_ms)


@register.filter
def ms_duration(milliseconds):
    """A TTL in milliseconds as a short duration (see `duration`)."""
    if milliseconds is None or milliseconds == "":
        return "—"
    return duration(int(milliseconds) // 1000)


@register.filter
def display_token(token):
    """A base64url key token shown as escaped text (bytes preserved), cut for list pages."""
    from continuity.key_links import short_display
    from continuity.keyspace import decode_key

    try:
        return short_display(decode_key(token))
    except ValueError:
        return "?"
