"""URL map: one include per app, Django's auth views and the admin."""
from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("generation/", include("generation.urls")),
    path("annotate/", include("annotate.urls")),
    path("training/", include("training.urls")),
    path("compare/", include("compare.urls")),
    path("loop/", include("loop.urls")),
]
