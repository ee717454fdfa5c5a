from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_role_groups(**kwargs: Any) -> None:
    from django.contrib.auth.models import Group

    from guardsite.roles import ALL_ROLES

    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)


class GuardsiteConfig(AppConfig):
    name = "guardsite"

    def ready(self) -> None:
        # The four roles exist in every database, fresh or migrated.
        post_migrate.connect(ensure_role_groups, dispatch_uid="guardsite.ensure_role_groups")
