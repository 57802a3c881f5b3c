from django.urls import path

from continuity.views import browse, jobs, keys, namespaces, overview, purge

app_name = "continuity"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/reviews/<int:pk>/", jobs.review_detail, name="review_detail"),
    path("jobs/reviews/<int:pk>/cancel/", jobs.review_cancel, name="review_cancel"),
    path("jobs/reviews/<int:pk>/retry/", jobs.review_retry, name="review_retry"),
    path("jobs/schedules/<int:pk>/", jobs.schedule_edit, name="schedule_edit"),
    path("jobs/schedules/<int:pk>/cost/", jobs.schedule_cost, name="schedule_cost"),
    path("purges/", purge.purge_list, name="purge_list"),
    path("purges/new/", purge.purge_new, name="purge_new"),
    path("purges/estimate/", purge.purge_estimate, name="purge_estimate"),
    path("purges/<int:pk>/", purge.purge_detail, name="purge_detail"),
    path("purges/<int:pk>/progress/", purge.purge_progress, name="purge_progress"),
    path("purges/<int:pk>/confirm/", purge.purge_confirm, name="purge_confirm"),
    path("purges/<int:pk>/cancel/", purge.purge_cancel, name="purge_cancel"),
    path("purges/<int:pk>/resume/", purge.purge_resume, name="purge_resume"),
    path("purges/<int:pk>/retry/", purge.purge_retry, name="purge_retry"),
    path("<slug:database>/summary/", overview.database_summary, name="database_summary"),
    path("<slug:database>/stats/", overview.namespace_stats, name="namespace_stats"),
    path("<slug:database>/browse/", browse.browse, name="browse"),
    path("<slug:database>/lookup/", browse.key_lookup, name="key_lookup"),
    path("<slug:database>/key/<str:token>/", keys.key_detail, name="key_detail"),
    path("<slug:database>/key/<str:token>/action/", keys.key_action, name="key_action"),
    path("<slug:database>/key/<str:token>/download/", keys.key_download, name="key_download"),
    path("<slug:database>/key/<str:token>/reveal/", keys.key_reveal, name="key_reveal"),
    path("<slug:database>/namespaces/", namespaces.namespace_list, name="namespace_list"),
    path("<slug:database>/namespaces/new/", namespaces.namespace_create, name="namespace_create"),
    path("<slug:database>/namespaces/<int:pk>/edit/", namespaces.namespace_edit, name="namespace_edit"),
    path("<slug:database>/reviews/start/", jobs.review_start, name="review_start"),
    path("<slug:database>/reviews/trend/", jobs.review_trend, name="review_trend"),
]
