from django.urls import path

from . import views

app_name = "generation"
urlpatterns = [
    path("", views.jobs, name="jobs"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:pk>/cancel/", views.cancel_job, name="cancel_job"),
]
