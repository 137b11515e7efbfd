from django.urls import path

from . import views

app_name = "annotate"
urlpatterns = [
    path("", views.label, name="label"),
]
