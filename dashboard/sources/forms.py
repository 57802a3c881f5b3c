"""The one form of the sources: a database record's Upstash side."""

from django import forms

from dashboard.models import UpstashLink
from dashboard.record_forms import ScrubRefusedMixin


class UpstashLinkForm(ScrubRefusedMixin, forms.ModelForm):
    class Meta:
        model = UpstashLink
        fields = ["upstash_id", "tls", "eviction", "budget", "max_request_size", "max_entry_size"]
