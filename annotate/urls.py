from django.urls import path

from . import views

app_name = "annotate"
urlpatterns = [
    path("", views.label, name="label"),
    path("submit/", views.submit, name="submit"),
    path("skip/", views.skip_pair, name="skip"),
    path("undo/", views.undo, name="undo"),
    path("skipped/", views.skipped, name="skipped"),
    path("skipped/return/", views.return_to_skipped, name="return_to_skipped"),
    path("quality/", views.quality, name="quality"),
    path("import/", views.import_file, name="import"),
    path("import/<int:pk>/", views.import_job, name="import_job"),
    path("import/<int:pk>/cancel/", views.import_cancel, name="import_cancel"),
    path("export/", views.export, name="export"),
    path("export/<int:pk>/", views.export_job, name="export_job"),
    path("export/<int:pk>/cancel/", views.export_cancel, name="export_cancel"),
    path("export/<int:pk>/download/", views.export_download, name="export_download"),
    path("rounds/", views.rounds, name="rounds"),
    path("rounds/<int:number>/", views.round_detail, name="round"),
    path("rounds/<int:number>/gold/", views.round_gold, name="round_gold"),
    path("rounds/<int:number>/gold/unset/", views.round_ungold, name="round_ungold"),
]
