from django.urls import path

from continuity.views import jobs, overview

app_name = "continuity"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/reviews/<int:pk>/", jobs.review_detail, name="review_detail"),
    path("jobs/reviews/<int:pk>/cancel/", jobs.review_cancel, name="review_cancel"),
    path("jobs/schedules/<int:pk>/", jobs.schedule_edit, name="schedule_edit"),
    path("<slug:database>/summary/", overview.database_summary, name="database_summary"),
    path("<slug:database>/reviews/start/", jobs.review_start, name="review_start"),
    path("<slug:database>/reviews/trend/", jobs.review_trend, name="review_trend"),
]
