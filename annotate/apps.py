from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.lifecycle import AFTER_PROCESS_GONE

        from .export_jobs import remove_files_of
        from .import_jobs import remove_upload_of

        # an export whose worker was lost (while it stopped, or once too often) leaves its folder, a partial file in
        # it, and an import its upload, which nothing will read: removed when its job is ended for it, not an hour on
        # by the next export's or import's sweep
        for clean_up in (remove_files_of, remove_upload_of):
            if clean_up not in AFTER_PROCESS_GONE:
                AFTER_PROCESS_GONE.append(clean_up)
