"""Alert channels, configured by admins, with a "send test" button."""

from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard import operations, roles
from dashboard.models import AlertChannel, AlertDelivery
from dashboard.record_forms import AlertChannelForm


@roles.role_required(roles.ADMIN)
def alert_list(request):
    channels = AlertChannel.objects.all()
    deliveries = AlertDelivery.objects.select_related("channel")[:30]
    return render(request, "dashboard/alert_list.html", {"channels": channels, "deliveries": deliveries})


@roles.role_required(roles.ADMIN)
def alert_channel_edit(request, pk=None):
    channel = get_object_or_404(AlertChannel, pk=pk) if pk else None
    form = AlertChannelForm(request.POST or None, instance=channel)
    if request.method == "POST" and form.is_valid():
        operations.save_alert_channel(form=form, actor=request.user, request=request)
        return redirect("dashboard:alert_list")
    title = f"Edit alert channel {channel}" if channel else "New alert channel"
    return render(request, "dashboard/record_form.html", {"form": form, "title": title, "cancel_url": reverse("dashboard:alert_list")})


@roles.role_required(roles.ADMIN)
@require_POST
def alert_channel_test(request, pk):
    channel = get_object_or_404(AlertChannel, pk=pk)
    sent = operations.send_test_alert(channel=channel, actor=request.user, request=request)
    return render(request, "dashboard/alert_list.html#channel",
                  {"channel": sent.channel, "message": sent.message, "ok": sent.ok})
