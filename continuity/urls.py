from django.urls import path

from continuity.views import jobs, overview, purge

app_name = "continuity"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("purges/", purge.purge_list, name="purge_list"),
    path("purges/new/", purge.purge_new, name="purge_new"),
    path("purges/<int:pk>/", purge.purge_detail, name="purge_detail"),
    path("purges/<int:pk>/progress/", purge.purge_progress, name="purge_progress"),
    path("purges/<int:pk>/confirm/", purge.purge_confirm, name="purge_confirm"),
    path("purges/<int:pk>/cancel/", purge.purge_cancel, name="purge_cancel"),
    path("<slug:database>/summary/", overview.database_summary, name="database_summary"),
]
