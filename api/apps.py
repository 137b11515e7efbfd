from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.core import checks
        from django.db.models.signals import post_save, pre_save

        from prefloop.lockout import check_proxy_count

        from .tokens import note_new_password, revoke_on_new_password

        checks.register(check_proxy_count, checks.Tags.security, deploy=True)

        user = get_user_model()
        pre_save.connect(note_new_password, sender=user, dispatch_uid="api-note-new-password")
        post_save.connect(revoke_on_new_password, sender=user, dispatch_uid="api-revoke-on-new-password")
