from django.shortcuts import render

from dashboard import roles


@roles.role_required(roles.VIEWER)
def job_list(request):
    from django_celery_beat.models import PeriodicTask
    from django_celery_results.models import TaskResult

    schedules = PeriodicTask.objects.select_related("interval", "crontab").order_by("name")
    results = TaskResult.objects.order_by("-date_created")[:50]
    return render(request, "continuity/job_list.html", {"schedules": schedules, "results": results})
