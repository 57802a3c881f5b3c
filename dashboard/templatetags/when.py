"""The one way pages show a moment: absolute, in the dashboard's time zone (UTC unless
DJANGO_TIME_ZONE says otherwise), with a relative hint. A builtin of every template.

    {{ run.finished_at|when }}      2026-12-06 21:27 UTC (3 min ago), in a <time> element
    {{ secret.next_due|when }}      2026-12-09 (in 3 days)
    {{ generated_at|at }}           2026-12-06 21:27 UTC (no hint: for files and attributes)

Both give "" for None, so `|default:"never"` follows them.
"""

from datetime import date, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


def _count(number, unit):
    return f"{number} {unit}{'' if number == 1 or unit in ('s', 'min', 'h') else 's'}"


def relative(value, now=None):
    """'just now', '45 s ago', '12 min ago', '3 h ago', '5 days ago', or 'in …' for the future;
    for a date: 'today', 'yesterday', 'tomorrow', 'in 3 days', '5 days ago'."""
    if not isinstance(value, datetime):
        days = (value - timezone.localdate(now)).days
        if -1 <= days <= 1:
            return {-1: "yesterday", 0: "today", 1: "tomorrow"}[days]
        return f"in {_count(days, 'day')}" if days > 0 else f"{_count(-days, 'day')} ago"
    seconds = ((now or timezone.now()) - value).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        text = _count(int(seconds), "s")
    elif seconds < 3600:
        text = _count(int(seconds // 60), "min")
    elif seconds < 48 * 3600:
        text = _count(int(seconds // 3600), "h")
    else:
        text = _count(int(seconds // 86400), "day")
    return f"in {text}" if future else f"{text} ago"


def absolute(value):
    """'2026-12-06 21:27 UTC' for a datetime (in the current time zone), '2026-12-06' for a date."""
    if isinstance(value, datetime):
        local = timezone.localtime(value) if timezone.is_aware(value) else value
        return f"{local:%Y-%m-%d %H:%M} {local.tzname() or ''}".rstrip()
    return f"{value:%Y-%m-%d}"


@register.filter
def at(value):
    """A moment as absolute text only; "" for None."""
    if not isinstance(value, (date, datetime)):
        return ""
    return absolute(value)


@register.filter
def when(value):
    """A moment as `<time>`: absolute, then the relative hint; its title has the exact ISO time."""
    if not isinstance(value, (date, datetime)):
        return ""
    iso = value.isoformat()
    return format_html('<time datetime="{}" title="{}">{}</time> <span class="when-ago">({})</span>', iso, iso,
                       absolute(value), relative(value))
