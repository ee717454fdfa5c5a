"""Published versions never change; rollback publishes a new version equal to an old one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from policies.models import Category, PolicyVersion


def test_publishing_freezes_the_draft_as_version_one(make_policy):
    policy = make_policy()
    version = policy.publish(change_note="initial")
    version.refresh_from_db()
    assert version.number == 1 and version.change_note == "initial" and version.published_at
    assert policy.latest_version() == version


def test_a_fresh_draft_after_publishing_equals_the_published_version(make_policy):
    policy = make_policy(publish=True)
    draft = policy.draft()
    assert draft.is_draft
    assert draft.to_spec() == policy.latest_version().to_spec()


def test_saving_a_published_version_raises(make_policy):
    version = make_policy(publish=True).latest_version()
    version.change_note = "rewritten history"
    with pytest.raises(ValidationError):
        version.save()
    assert PolicyVersion.objects.get(pk=version.pk).change_note == "first"


def test_deleting_a_published_version_raises(make_policy):
    version = make_policy(publish=True).latest_version()
    with pytest.raises(ValidationError):
        version.delete()
    assert PolicyVersion.objects.filter(pk=version.pk).exists()


def test_saving_a_category_of_a_published_version_raises(make_policy):
    category = make_policy(publish=True).latest_version().categories.first()
    category.name = "changed"
    with pytest.raises(ValidationError):
        category.save()
    assert Category.objects.get(pk=category.pk).name != "changed"


def test_deleting_a_category_of_a_published_version_raises(make_policy):
    category = make_policy(publish=True).latest_version().categories.first()
    with pytest.raises(ValidationError):
        category.delete()
    assert Category.objects.filter(pk=category.pk).exists()


def test_adding_a_category_to_a_published_version_raises(make_policy):
    version = make_policy(publish=True).latest_version()
    with pytest.raises(ValidationError):
        Category.objects.create(version=version, code="S9", name="Late addition")


def test_editing_the_draft_leaves_the_published_version_unchanged(make_policy):
    policy = make_policy(publish=True)
    before = policy.latest_version().to_spec()
    draft = policy.draft()
    category = draft.categories.get(code="S1")
    category.description = "A new rule."
    category.save()
    draft.name = "Renamed"
    draft.save()
    assert policy.latest_version().to_spec() == before
    assert draft.to_spec() != before


def test_renaming_a_published_policy_changes_only_what_the_draft_renders(make_policy):
    policy = make_policy(publish=True)
    draft = policy.draft()
    draft.name = "Acme v2 name"
    draft.save()
    assert policy.latest_version().to_spec().name == "acme policy"
    assert draft.to_spec().name == "Acme v2 name"
    policy.publish(change_note="rename")
    policy.refresh_from_db()
    assert policy.name == "Acme v2 name"


def test_rollback_publishes_a_new_version_equal_to_the_old_one(make_policy):
    policy = make_policy(publish=True)
    v1 = policy.latest_version()
    draft = policy.draft()
    draft.categories.get(code="S2").delete()
    Category.objects.create(version=draft, position=5, code="S3", name="Added later")
    v2 = policy.publish(change_note="second")

    v3 = policy.rollback_to(v1)

    assert v3.number == 3
    assert v3.to_spec() == v1.to_spec()
    assert v3.change_note == "Roll back to version 1"
    assert list(v3.categories.values_list("code", "severity", "action")) == list(v1.categories.values_list("code", "severity", "action"))
    # History is never rewritten: v2 still exists, unchanged.
    assert set(PolicyVersion.objects.get(pk=v2.pk).categories.values_list("code", flat=True)) == {"S1", "S3"}


def test_rollback_restores_the_old_versions_name_and_description(make_policy):
    policy = make_policy(publish=True)
    v1 = policy.latest_version()
    draft = policy.draft()
    draft.name, draft.description = "Other name", "Other description"
    draft.save()
    policy.publish(change_note="rename")
    v3 = policy.rollback_to(v1)
    assert (v3.to_spec().name, v3.to_spec().description) == (v1.to_spec().name, v1.to_spec().description)


def test_publishing_an_empty_draft_raises(db):
    from guard.contract import PolicySpec
    from policies.models import Policy

    policy = Policy.create_from_spec(PolicySpec(name="Empty", categories=()), slug="empty")
    with pytest.raises(ValidationError):
        policy.publish()


def test_every_preset_creates_a_policy_with_its_categories(db):
    from policies import presets
    from policies.models import Policy

    for index, name in enumerate(presets.preset_names()):
        spec = presets.preset_spec(name)
        policy = Policy.create_from_spec(spec, slug=f"preset-{index}")
        assert policy.draft().to_spec().codes == spec.codes
