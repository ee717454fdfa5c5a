from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_immutability_triggers(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    """Re-create missing triggers after migrate: SQLite drops them when a migration rebuilds a table."""
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from policies import immutability

    connection = connections[using]
    applied = MigrationRecorder(connection).applied_migrations()
    if ("policies", "0006_published_versions_immutable_triggers") in applied and not immutability.installed(connection):
        immutability.install(connection)


class PoliciesConfig(AppConfig):
    name = "policies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_ensure_immutability_triggers, sender=self)
