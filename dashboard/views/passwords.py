"""Django's password change views, with the first sign-in rule (dashboard.accounts)."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy

from dashboard import accounts


class PasswordChange(auth_views.PasswordChangeView):
    success_url = reverse_lazy("password_change_done")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["first_sign_in"] = bool(self.request.session.get(accounts.SESSION_FLAG))
        return context

    def form_valid(self, form):
        response = super().form_valid(form)  # saves, and keeps this session signed in
        accounts.password_set(self.request)
        messages.success(self.request, "Your password is changed. Other sessions of yours are signed out.")
        return response


password_change = PasswordChange.as_view()
password_change_done = auth_views.PasswordChangeDoneView.as_view()
