"""A version published by a rollback names the version it equals (the audit logs it as policy.rollback).

Rollbacks made before this field existed are recognised by the change note the rollback wrote
("Roll back to version N"); ``rollback_of`` is provenance, not content, so the immutability
triggers let this one column be filled in."""

import re

import django.db.models.deletion
from django.db import migrations, models

NOTE = re.compile(r"^Roll back to version (\d+)$")


def link_earlier_rollbacks(apps, schema_editor) -> None:
    PolicyVersion = apps.get_model("policies", "PolicyVersion")
    for version in PolicyVersion.objects.filter(number__isnull=False, change_note__startswith="Roll back to version "):
        match = NOTE.match(version.change_note)
        target = match and PolicyVersion.objects.filter(policy_id=version.policy_id, number=int(match.group(1))).first()
        if target:
            PolicyVersion.objects.filter(pk=version.pk).update(rollback_of=target)


class Migration(migrations.Migration):
    dependencies = [("policies", "0006_published_versions_immutable_triggers")]

    operations = [
        migrations.AddField(
            model_name="policyversion",
            name="rollback_of",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="policies.policyversion"
            ),
        ),
        migrations.RunPython(link_earlier_rollbacks, migrations.RunPython.noop),
    ]
