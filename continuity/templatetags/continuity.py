from django import template

register = template.Library()


@register.filter
def duration(seconds):
    """Seconds as a short human duration: 45s, 15m, 1h 30m, 2d 4h."""
    if seconds is None or seconds == "":
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" + (f" {sec}s" if sec else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")


@register.filter
def ms_duration(milliseconds):
    """A TTL in milliseconds as a short duration (see `duration`)."""
    if milliseconds is None or milliseconds == "":
        return "—"
    return duration(int(milliseconds) // 1000)


@register.filter
def display_token(token):
    """A base64url key token shown as escaped text (bytes preserved)."""
    from continuity.keyspace import decode_key, display_key

    try:
        return display_key(decode_key(token))
    except ValueError:
        return "?"
