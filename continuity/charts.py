"""Server-side SVG charts (pygal) for the namespace overview. pygal escapes every label;
`js=[]` keeps it from referencing its tooltip script on a CDN."""

import re
from collections import defaultdict

import pygal
from pygal.style import CleanStyle, Style

from continuity.policy import BUCKET_NAMES
from continuity.models import ReviewNamespaceStat

STYLE = Style(background="transparent", plot_background="transparent", font_family="system-ui, sans-serif",
              colors=("#3e8ed0", "#f14668", "#48c78e", "#ffe08a"), title_font_size=16, label_font_size=12,
              legend_font_size=12)
BUCKETS = list(BUCKET_NAMES)


def _options(title, **extra):
    return {"title": title, "style": STYLE, "js": [], "disable_xml_declaration": True, "width": 640,
            "height": 300, "show_legend": False, "explicit_size": False, "print_values": False, **extra}


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _render(chart):
    # pygal embeds its tooltip config as an inline <script>; with no tooltip script
    # loaded it does nothing, and the page carries no inline scripts.
    return _SCRIPT.sub("", chart.render(is_unicode=True))


def namespace_charts(sample, namespaces):
    """{'keys', 'memory', 'without_ttl'} SVG strings, one bar per namespace."""
    names = [ns.name for ns in namespaces] + (["(unknown)"] if sample.figures[""].keys else [])
    figs = [sample.figures[ns.name] for ns in namespaces] + ([sample.figures[""]] if sample.figures[""].keys else [])
    scale = sample.scale()
    label = "" if sample.complete else " (estimated from a sample)"
    keys = pygal.Bar(**_options("Keys per namespace" + label))
    keys.x_labels = names
    keys.add("keys", [round(f.keys * scale) for f in figs])
    memory = pygal.Bar(**_options("Memory per namespace" + label, value_formatter=_bytes))
    memory.x_labels = names
    memory.add("memory", [round(f.memory * scale) for f in figs])
    without = pygal.Bar(**_options("Share of keys without TTL", range=(0, 100),
                                   value_formatter=lambda v: f"{v:.1f}%"))
    without.x_labels = names
    without.add("without TTL", [round(f.share_without_ttl * 100, 1) for f in figs])
    return {"keys": _render(keys), "memory": _render(memory), "without_ttl": _render(without)}


def ttl_distribution_chart(namespace, figures):
    """Keys by TTL bucket (counts, not memory), split into inside / outside the
    namespace's policy band, so the band shows as the blue part of the bars."""
    chart = pygal.StackedBar(**_options(f"{namespace.name}: TTL distribution (policy {namespace.ttl_band()})",
                                        show_legend=True, legend_at_bottom=True, x_label_rotation=0))
    chart.x_labels = BUCKETS
    chart.add("inside policy band", [figures.in_band[b] for b in BUCKETS])
    chart.add("outside policy band", [figures.ttl_buckets[b] - figures.in_band[b] for b in BUCKETS])
    return _render(chart)


def _bytes(value):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} TiB"


def namespace_trends(database, *, runs=30):
    """{label: [(finished_at, keys, findings, sampled)]} over the last `runs` succeeded
    reviews, oldest first; a sampled review's figures are scaled to the whole keyspace."""
    series = defaultdict(list)
    for stat in ReviewNamespaceStat.objects.trend(database, runs=runs):
        scale = stat.run.scale()
        series[stat.label].append((stat.run.finished_at, round(stat.keys * scale),
                                   round(sum(stat.findings.values()) * scale), stat.run.sampled))
    return dict(sorted(series.items()))


def trend_svg(label, points):
    """A line chart of keys (left axis) and findings (right axis) for one namespace, with
    exact and sampled (estimated) reviews as separate series."""
    chart = pygal.Line(style=CleanStyle, height=260, width=720, js=[], disable_xml_declaration=True,
                       show_dots=len(points) < 40, x_label_rotation=30, show_minor_x_labels=False,
                       x_labels_major_count=6, truncate_legend=-1, title=label, include_x_axis=True,
                       allow_interruptions=True)
    chart.x_labels = [finished.strftime("%m-%d %H:%M") for finished, _, _, _ in points]
    for sampled, name in ((False, "exact"), (True, "sampled, estimated")):
        if any(point[3] == sampled for point in points):
            chart.add(f"keys ({name})", [keys if s == sampled else None for _, keys, _, s in points])
            chart.add(f"findings ({name})", [found if s == sampled else None for _, _, found, s in points],
                      secondary=True)
    return _render(chart)
