from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.core import checks
        from django.db.models.signals import post_save, pre_save

        from prefloop.lockout import check_proxy_count

        from .tokens import note_lost_access, revoke_on_lost_access

        checks.register(check_proxy_count, checks.Tags.security, deploy=True)

        user = get_user_model()
        pre_save.connect(note_lost_access, sender=user, dispatch_uid="api-note-lost-access")
        post_save.connect(revoke_on_lost_access, sender=user, dispatch_uid="api-revoke-on-lost-access")
