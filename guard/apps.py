from django.apps import AppConfig


class GuardConfig(AppConfig):
    name = "guard"
    default_auto_field = "django.db.models.BigAutoField"
