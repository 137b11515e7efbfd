from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.lifecycle import AFTER_PROCESS_GONE

        from .services import remove_checkpoints_of

        # a train_round (or a loop's round) killed outright, or whose worker was lost, leaves its unregistered
        # checkpoint folder: removed when its job is ended for it, not only when the next training run starts
        if remove_checkpoints_of not in AFTER_PROCESS_GONE:
            AFTER_PROCESS_GONE.append(remove_checkpoints_of)
