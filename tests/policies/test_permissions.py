"""Everyone signed in reads policies; only admin and policy_editor change them."""

from __future__ import annotations

import pytest

from policies.models import Policy

READERS = ("reviewer", "viewer")
EDITORS = ("policy_editor", "admin")


def edit_requests(policy: Policy) -> list[tuple[str, str, dict]]:
    draft = policy.draft()
    category = draft.categories.first()
    base = f"/policies/{policy.slug}"
    return [
        ("post", "/policies/new/", {"preset": "general", "name": "Mine"}),
        ("post", "/policies/import/", {"text": '{"name": "x", "categories": [{"code": "A", "name": "a"}]}'}),
        ("get", "/policies/import/", {}),
        ("post", f"{base}/import/", {"text": "{}"}),
        ("post", f"{base}/draft/header/", {"name": "Renamed"}),
        ("get", f"{base}/draft/header/?edit=1", {}),
        ("post", f"{base}/draft/categories/", {"new-code": "S9", "new-name": "New", "new-severity": "low", "new-action": "flag"}),
        ("get", f"{base}/draft/categories/{category.pk}/edit/", {}),
        ("post", f"{base}/draft/categories/{category.pk}/edit/", {f"c{category.pk}-code": "S1", f"c{category.pk}-name": "x"}),
        ("post", f"{base}/draft/categories/{category.pk}/delete/", {}),
        ("post", f"{base}/draft/categories/{category.pk}/move/", {"direction": "down"}),
        ("post", f"{base}/draft/publish/", {"change_note": "sneaky"}),
        ("post", f"{base}/draft/discard/", {}),
        ("post", f"{base}/versions/1/rollback/", {}),
    ]


@pytest.mark.parametrize("role", READERS)
def test_readers_get_403_on_every_edit_endpoint(client_as, make_policy, role):
    policy = make_policy(publish=True)
    client = client_as(role)
    for method, url, data in edit_requests(policy):
        response = getattr(client, method)(url, data)
        assert response.status_code == 403, f"{method.upper()} {url} answered {response.status_code}"
    assert Policy.objects.count() == 1
    assert policy.versions.filter(number__isnull=False).count() == 1
    assert [c.code for c in policy.draft().categories.all()] == ["S1", "S2"]


@pytest.mark.parametrize("role", READERS)
def test_readers_can_read_every_policy_page(client_as, make_policy, role):
    policy = make_policy(publish=True)
    client = client_as(role)
    for url in (
        "/policies/",
        f"/policies/{policy.slug}/",
        f"/policies/{policy.slug}/draft/",
        f"/policies/{policy.slug}/versions/1/",
        f"/policies/{policy.slug}/diff/?old=1&new=draft",
        f"/policies/{policy.slug}/export/",
        f"/policies/{policy.slug}/model-input/?version=1",
    ):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("role", READERS)
def test_readers_do_not_see_edit_controls(client_as, make_policy, role):
    policy = make_policy(publish=True)
    client = client_as(role)
    editor = client.get(f"/policies/{policy.slug}/draft/").content.decode()
    assert "category-edit" not in editor and "/draft/categories/" not in editor
    assert "Publish version" not in editor and "Add a category" not in editor
    listing = client.get("/policies/").content.decode()
    assert "Create policy" not in listing and "Import JSON" not in listing
    detail = client.get(f"/policies/{policy.slug}/").content.decode()
    assert "roll back" not in detail.lower()


@pytest.mark.parametrize("role", EDITORS)
def test_editors_see_edit_controls(client_as, make_policy, role):
    policy = make_policy(publish=True)
    editor = client_as(role).get(f"/policies/{policy.slug}/draft/").content.decode()
    assert "Add a category" in editor and "Publish version 2" in editor


@pytest.mark.parametrize("role", EDITORS)
def test_editors_can_change_the_draft(client_as, make_policy, role):
    policy = make_policy()
    response = client_as(role).post(
        f"/policies/{policy.slug}/draft/categories/",
        {"new-code": "S9", "new-name": "New rule", "new-severity": "low", "new-action": "allow"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert policy.draft().categories.filter(code="S9").exists()


def test_anonymous_visitors_are_sent_to_sign_in(client, make_policy):
    policy = make_policy()
    response = client.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "x"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
