"""URL map: one include per app, Django's sign-in, sign-out and password-change views, and the admin. No password
reset: it would mail a link, and PrefLoop sends no mail (an administrator sets a new password in the admin)."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from api.urls import account as api_account
from api.urls import api_patterns

from . import health, lockout, views

accounts = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", lockout.PasswordChangeView.as_view(), name="password_change"),
    path("password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    # Browsers ask for /favicon.ico before they read the page's <link rel="icon">.
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/", include(accounts)),
    # The admin's own password change compares the password without counting failures: it is this one, counted.
    path("admin/password_change/", admin.site.admin_view(RedirectView.as_view(pattern_name="password_change"))),
    path("admin/", admin.site.urls),
    path("generation/", include("generation.urls")),
    path("annotate/", include("annotate.urls")),
    path("training/", include("training.urls")),
    path("compare/", include("compare.urls")),
    path("loop/", include("loop.urls")),
    path("api/v1/", api_patterns()),
    path("account/tokens/", include((api_account, "api"))),
]

# The pages' refusals say what was wrong (prefloop/errors.py)
handler400 = "prefloop.errors.bad_request"
handler404 = "prefloop.errors.page_not_found"
