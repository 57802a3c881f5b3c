"""Small display helpers shared by models, templates and the policy (no Django, no Redis),
and the one parser of typed durations (every TTL field: `parse_duration`)."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")
DURATION_HELP = "A duration such as 90s, 15m, 1h, 1h 30m or 7d (a bare number is seconds)."


def parse_duration(text):
    """Seconds of a typed duration: `3600`, `45s`, `15m`, `1h`, `1h 30m`, `1h30m`, `7d`, `2w`
    (units s, m, h, d, w; case and spaces ignored). ValueError (with DURATION_HELP) for
    anything else, a negative or an empty value."""
    cleaned = str(text).strip().lower()
    if cleaned.isdigit():
        return int(cleaned)
    compact = re.sub(r"\s+", "", cleaned)
    parts = _PART.findall(compact)
    if not parts or "".join(f"{number}{unit}" for number, unit in parts) != compact:
        raise ValueError(DURATION_HELP)
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def exact_duration(seconds):
    """Seconds as the shortest exact typed duration, which `parse_duration` reads back to the
    same value: 3600 → 1h, 5400 → 1h 30m, 90061 → 1d 1h 1m 1s, 0 → 0s."""
    if seconds is None or seconds == "":
        return ""
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


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
