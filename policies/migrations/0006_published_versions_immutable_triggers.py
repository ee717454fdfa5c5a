"""Database triggers that refuse changing or deleting a published policy version or its categories
(policies/immutability.py: PostgreSQL and SQLite)."""

from django.db import migrations


def install(apps, schema_editor) -> None:
    from policies import immutability

    immutability.install(schema_editor.connection)


def remove(apps, schema_editor) -> None:
    from policies import immutability

    immutability.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("policies", "0005_category_teaching")]

    operations = [migrations.RunPython(install, remove)]
