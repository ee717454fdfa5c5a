"""Published policy versions are immutable in the database itself: a queryset ``update()``, a ``delete()``
or raw SQL cannot change what a verdict was judged under (policies/immutability.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction

from policies.models import Category, PolicyVersion
from tests.conftest import REPO


def refused(action: object) -> str:
    """Run ``action`` in a savepoint; return the database's refusal (the test goes on: the failure is clean)."""
    with pytest.raises(IntegrityError) as refusal, transaction.atomic():
        action()  # type: ignore[operator]
    return str(refusal.value)


def test_a_queryset_update_of_a_published_version_is_refused(make_policy):
    version = make_policy(publish=True).latest_version()
    message = refused(lambda: PolicyVersion.objects.filter(pk=version.pk).update(name="rewritten"))
    assert "published policy versions are immutable" in message
    assert PolicyVersion.objects.get(pk=version.pk).name == version.name


def test_raw_sql_cannot_change_a_published_version(make_policy):
    version = make_policy(publish=True).latest_version()

    def rewrite() -> None:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE policies_policyversion SET description = 'anything goes' WHERE id = %s", [version.pk])

    assert "immutable" in refused(rewrite)
    assert PolicyVersion.objects.get(pk=version.pk).description != "anything goes"


def test_renumbering_a_published_version_is_refused(make_policy):
    version = make_policy(publish=True).latest_version()
    refused(lambda: PolicyVersion.objects.filter(pk=version.pk).update(number=7))
    assert PolicyVersion.objects.get(pk=version.pk).number == 1


def test_a_queryset_delete_of_a_published_version_is_refused(make_policy):
    version = make_policy(publish=True).latest_version()
    refused(lambda: PolicyVersion.objects.filter(pk=version.pk).delete())
    assert PolicyVersion.objects.filter(pk=version.pk).exists()
    assert version.categories.count() == 2


def test_raw_sql_cannot_delete_a_published_version(make_policy):
    version = make_policy(publish=True).latest_version()

    def delete() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM policies_policyversion WHERE id = %s", [version.pk])

    refused(delete)
    assert PolicyVersion.objects.filter(pk=version.pk).exists()


def test_categories_of_a_published_version_cannot_be_updated_added_or_deleted(make_policy):
    version = make_policy(publish=True).latest_version()
    first = version.categories.first()
    assert "categories of a published policy version" in refused(lambda: Category.objects.filter(pk=first.pk).update(action="allow"))
    refused(lambda: Category.objects.filter(pk=first.pk).delete())
    refused(lambda: Category.objects.bulk_create([Category(version=version, code="S9", name="Late addition")]))
    assert [(c.code, c.action) for c in version.categories.all()] == [("S1", "flag"), ("S2", "flag")]


def test_a_draft_category_cannot_be_moved_into_a_published_version(make_policy):
    policy = make_policy(publish=True)
    draft_category = policy.draft().categories.first()
    refused(lambda: Category.objects.filter(pk=draft_category.pk).update(version=policy.latest_version()))


def test_publishing_editing_the_draft_and_rolling_back_still_work(make_policy):
    policy = make_policy(publish=True)
    draft = policy.draft()
    Category.objects.filter(version=draft, code="S2").update(description="Edited in the draft.")
    draft.categories.get(code="S1").delete()
    second = policy.publish(change_note="second")
    assert second.number == 2 and list(second.categories.values_list("code", flat=True)) == ["S2"]
    third = policy.rollback_to(policy.versions.get(number=1))
    assert third.number == 3 and list(third.categories.values_list("code", flat=True)) == ["S1", "S2"]
    assert policy.discard_draft_changes().to_spec() == third.to_spec()


def test_deleting_the_user_who_published_keeps_the_version(make_policy):
    editor = User.objects.create_user("editor")
    version = make_policy().publish(editor)
    editor.delete()  # Django sets published_by to NULL: who published is metadata, not content
    version.refresh_from_db()
    assert version.published_by is None and version.number == 1


@pytest.mark.slow
def test_the_demos_sqlite_database_refuses_too(tmp_path: Path):
    database = tmp_path / "demo.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "GUARDSITE_VAR_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True, timeout=300)
    script = (
        "from guard.contract import CategorySpec, PolicySpec; from policies.models import Policy; "
        "p = Policy.create_from_spec(PolicySpec(name='Demo', categories=(CategorySpec('S1', 'One', 'x'),)), slug='demo'); "
        "p.publish(); p.rollback_to(p.latest_version()); print(p.latest_version().number)"
    )
    published = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=300)
    assert published.stdout.strip().splitlines()[-1] == "2"  # publishing and rollback work on SQLite with the triggers
    raw = sqlite3.connect(database)
    for statement in (
        "UPDATE policies_policyversion SET name = 'x' WHERE number = 1",
        "DELETE FROM policies_policyversion WHERE number = 1",
        "UPDATE policies_category SET name = 'x' WHERE version_id = (SELECT id FROM policies_policyversion WHERE number = 1)",
        "DELETE FROM policies_category",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            raw.execute(statement)
    assert raw.execute("SELECT count(*) FROM policies_policyversion WHERE number IS NOT NULL").fetchone() == (2,)


def test_triggers_dropped_by_a_table_rebuild_come_back_after_migrate(db):
    from django.core.management import call_command

    from policies import immutability

    assert immutability.installed(connection)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER policies_published_category_immutable ON policies_category")
    assert not immutability.installed(connection)
    call_command("migrate", verbosity=0)
    assert immutability.installed(connection)
