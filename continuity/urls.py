from django.urls import path

from continuity.views import jobs, overview

app_name = "continuity"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("<slug:database>/summary/", overview.database_summary, name="database_summary"),
]
