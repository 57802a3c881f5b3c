"""Trend charts (pygal SVG, no external JavaScript) for the review pages."""

from collections import defaultdict

import pygal
from pygal.style import CleanStyle

from continuity.models import ReviewNamespaceStat


def namespace_trends(database, *, runs=30):
    """{label: [(finished_at, keys, findings)]} over the last `runs` succeeded reviews,
    oldest first."""
    series = defaultdict(list)
    for stat in ReviewNamespaceStat.objects.trend(database, runs=runs):
        series[stat.label].append((stat.run.finished_at, stat.keys, sum(stat.findings.values())))
    return dict(sorted(series.items()))


def trend_svg(label, points):
    """A line chart of keys (left axis) and findings (right axis) for one namespace."""
    chart = pygal.Line(style=CleanStyle, height=260, width=720, js=[], disable_xml_declaration=True,
                       show_dots=len(points) < 40, x_label_rotation=30, show_minor_x_labels=False,
                       x_labels_major_count=6, truncate_legend=-1, title=label, include_x_axis=True)
    chart.x_labels = [finished.strftime("%m-%d %H:%M") for finished, _, _ in points]
    chart.add("keys", [keys for _, keys, _ in points])
    chart.add("findings", [findings for _, _, findings in points], secondary=True)
    return chart.render(is_unicode=True)
