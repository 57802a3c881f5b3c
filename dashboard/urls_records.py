"""Routes of the records side (included into the `dashboard` namespace by dashboard/urls.py)."""

from django.urls import path

from dashboard.views import alerts, records, runbook, secrets

record_patterns = [
    path("runbook/", runbook.runbook, name="runbook"),
    path("runbook.md", runbook.runbook_markdown, name="runbook_markdown"),
    path("databases/", records.database_list, name="database_list"),
    path("databases/new/", records.database_create, name="database_create"),
    path("databases/<slug:name>/", records.database_detail, name="database_detail"),
    path("databases/<slug:name>/edit/", records.database_edit, name="database_edit"),
    path("access/", records.account_list, name="account_list"),
    path("access/new/", records.account_create, name="account_create"),
    path("access/<int:pk>/", records.account_detail, name="account_detail"),
    path("access/<int:pk>/edit/", records.account_edit, name="account_edit"),
    path("secrets/", secrets.secret_list, name="secret_list"),
    path("secrets/new/", secrets.secret_create, name="secret_create"),
    path("secrets/<slug:name>/", secrets.secret_detail, name="secret_detail"),
    path("secrets/<slug:name>/edit/", secrets.secret_edit, name="secret_edit"),
    path("secrets/<slug:name>/rotate/", secrets.secret_rotate, name="secret_rotate"),
    path("secrets/<slug:name>/exposed/", secrets.secret_exposed, name="secret_exposed"),
    path("env/", secrets.envvar_list, name="envvar_list"),
    path("env/new/", secrets.envvar_create, name="envvar_create"),
    path("env/<str:name>/", secrets.envvar_detail, name="envvar_detail"),
    path("env/<str:name>/edit/", secrets.envvar_edit, name="envvar_edit"),
    path("checklist/", records.checklist, name="checklist"),
    path("checklist/new/", records.checklist_create, name="checklist_create"),
    path("checklist/<int:pk>/edit/", records.checklist_edit, name="checklist_edit"),
    path("checklist/<int:pk>/toggle/", records.checklist_toggle, name="checklist_toggle"),
    path("phases/", records.phase_list, name="phase_list"),
    path("phases/new/", records.phase_create, name="phase_create"),
    path("phases/<int:pk>/edit/", records.phase_edit, name="phase_edit"),
    path("alerts/", alerts.alert_list, name="alert_list"),
    path("alerts/new/", alerts.alert_channel_edit, name="alert_channel_create"),
    path("alerts/<int:pk>/edit/", alerts.alert_channel_edit, name="alert_channel_edit"),
    path("alerts/<int:pk>/test/", alerts.alert_channel_test, name="alert_channel_test"),
]
