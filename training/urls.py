from django.urls import path

from . import views

app_name = "training"
urlpatterns = [
    path("", views.runs, name="runs"),
    path("runs/<int:pk>/", views.run, name="run"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/cancel/", views.cancel_run, name="cancel_run"),
    path("runs/<int:pk>/gate/", views.check_gate, name="check_gate"),
    path("runs/<int:pk>/promote/", views.promote, name="promote"),
    path("versions/<int:pk>/rollback/", views.rollback, name="rollback"),
]
