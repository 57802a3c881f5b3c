from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path

from dashboard.devtools.idp import control

urlpatterns = [
    path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
    path("login/", auth_views.LoginView.as_view(template_name="idp/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("control/", control.control, name="control"),
    path("", lambda request: HttpResponse("Demo OpenID provider. Issuer: /openid\n", content_type="text/plain")),
]
