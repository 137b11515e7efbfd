from django.urls import path

from . import views

app_name = "compare"
urlpatterns = [
    path("", views.index, name="index"),
    path("sets/<int:pk>/", views.job, name="job"),
    path("sets/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("comparisons/<int:pk>/vote/", views.vote, name="vote"),
    path("leaderboard/", views.leaderboard_view, name="leaderboard"),
    path("rounds/", views.rounds, name="rounds"),
    path("rounds/<int:run_id>/", views.run, name="run"),
]
