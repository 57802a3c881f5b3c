"""Small display helpers shared by models, templates and the policy (no Django, no Redis)."""


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


def ttl_band(min_seconds, max_seconds):
    """A TTL policy band, e.g. '15m – 1h'."""
    low = duration(min_seconds) if min_seconds else "0"
    high = duration(max_seconds) if max_seconds else "∞"
    return f"{low} – {high}"
