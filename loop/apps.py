from django.apps import AppConfig


class LoopConfig(AppConfig):
    name = "loop"
    default_auto_field = "django.db.models.BigAutoField"
