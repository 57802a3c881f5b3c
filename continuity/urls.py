from django.urls import path

from continuity import views

app_name = "continuity"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("jobs/", views.job_list, name="job_list"),
    path("<slug:database>/summary/", views.database_summary, name="database_summary"),
]
