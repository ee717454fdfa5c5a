"""Policy names are unique, ignoring case. Existing duplicates are renamed first:
the oldest policy keeps the name, later ones get " (2)", " (3)", ... (their drafts
too, so the next publish keeps the new name; published versions never change)."""

from django.db import migrations, models
from django.db.models.functions import Lower


def rename_duplicates(apps, schema_editor) -> None:
    Policy = apps.get_model("policies", "Policy")
    PolicyVersion = apps.get_model("policies", "PolicyVersion")
    taken = {name.lower() for name in Policy.objects.values_list("name", flat=True)}
    kept: set[str] = set()
    for policy in Policy.objects.order_by("created_at", "pk"):
        key = policy.name.lower()
        if key not in kept:
            kept.add(key)
            continue
        suffix = 2
        while True:
            ending = f" ({suffix})"
            candidate = policy.name[: 200 - len(ending)] + ending
            if candidate.lower() not in taken:
                break
            suffix += 1
        taken.add(candidate.lower())
        kept.add(candidate.lower())
        Policy.objects.filter(pk=policy.pk).update(name=candidate)
        PolicyVersion.objects.filter(policy_id=policy.pk, number__isnull=True, name=policy.name).update(name=candidate)


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0003_policy_explain"),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="policy",
            constraint=models.UniqueConstraint(Lower("name"), name="unique_policy_name_ci"),
        ),
    ]
