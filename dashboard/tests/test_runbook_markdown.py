"""runbook.md is rendered with autoescape off: operator text must come out as inert Markdown."""

from django.urls import reverse

from continuity.models import Namespace
from dashboard.models import ChecklistItem, PhaseMapping


def test_it_escapes_markdown_active_text_in_the_runbook_download(viewer_client, lucia):
    phase = PhaseMapping.objects.order_by("number").first()
    phase.title = "<script>alert(1)</script> *bold* & co"
    phase.primary_page = "[wiki](javascript:alert(1))"
    phase.primary_page_url = "https://wiki.example/a>[x](javascript:y)"
    phase.save()
    ChecklistItem.objects.filter(text="create Upstash account").update(
        text="see ![t](https://t.example/p.png) <img src=x onerror=alert(1)>")
    Namespace.objects.create(database=lucia, name="odd", prefix="lucia:`x|y:", purpose="# Heading\n- item")

    text = viewer_client.get(reverse("dashboard:runbook_markdown")).content.decode()

    assert f"- Phase {phase.number} — \\<script\\>alert(1)\\</script\\> \\*bold\\* \\& co" in text
    assert "Primary runbook page: \\[wiki\\](javascript:alert(1)) (<https://wiki.example/a%3E[x](javascript:y)>)" in text
    assert "- [ ] see \\!\\[t\\](https://t.example/p.png) \\<img src=x onerror=alert(1)\\>" in text
    # One line per row or item: a newline becomes an inline <br>, so only the start is block-active.
    assert "| ``lucia:`x\\|y:{id}`` | \\# Heading<br>- item | 0 – ∞ |" in text
    assert "- \\# Heading<br>- item TTL:" in text
    # Every "<" left is escaped, a <br> of ours, or the one autolink; every "[" is escaped or in it.
    import re

    bare = [m.start() for m in re.finditer(r"(?<!\\)<(?!br>|https://wiki\.example/)", text)]
    assert bare == []
    assert re.findall(r"(?<!\\)!\[|(?<!\\)\[(?!x\]\(javascript:y\)>| \]|x\] )", text) == []
