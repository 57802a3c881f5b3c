from django.contrib.auth import views as auth_views
from django.urls import include, path

from continuity.views import overview, status
from dashboard import health, monitoring
from dashboard.sso import views as sso_views
from dashboard.urls_records import record_patterns
from dashboard.views import access, passwords, records


dashboard_patterns = [
    path("", records.home, name="home"),
    path("audit/", access.audit_list, name="audit_list"),
    path("audit/<int:pk>/", access.audit_detail, name="audit_detail"),
    path("users/", access.user_list, name="user_list"),
    path("users/new/", access.user_create, name="user_create"),
    path("users/<int:pk>/role/", access.user_role, name="user_role"),
    *record_patterns,
    # The record page's live region reads the keyspace: a continuity view, under the record's URL.
    path("databases/<slug:name>/topology/", overview.database_topology, name="database_topology"),
    # The home page's first screen reads the keyspace's state: a continuity view too.
    path("now/", status.first_screen, name="first_screen"),
]

urlpatterns = [
    path("", include((dashboard_patterns, "dashboard"))),
    path("keyspace/", include("continuity.urls")),
    path("accounts/login/", sso_views.LoginPage.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", passwords.password_change, name="password_change"),
    path("accounts/password/done/", passwords.password_change_done, name="password_change_done"),
    path("oidc/authenticate/", sso_views.sso_start, name="oidc_authentication_init"),
    path("oidc/callback/", sso_views.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", monitoring.metrics, name="metrics"),
]

handler403 = "dashboard.errors.forbidden"
