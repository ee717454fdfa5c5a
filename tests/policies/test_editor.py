"""The draft editor: htmx partials for every small edit, validation messages next to the field."""

from __future__ import annotations

import re

import pytest

from policies.models import Policy

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def editor(client_as):
    return client_as("policy_editor")


def add(client, policy: Policy, **fields: str):
    data = {"new-code": "S9", "new-name": "New rule", "new-severity": "medium", "new-action": "flag"}
    data.update({f"new-{key}": value for key, value in fields.items()})
    return client.post(f"/policies/{policy.slug}/draft/categories/", data, **HX)


def test_creating_from_a_preset_copies_its_categories_into_the_draft(editor, db):
    response = editor.post("/policies/new/", {"preset": "mlcommons_hazards", "name": "", "slug": "", "description": ""})
    policy = Policy.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/policies/{policy.slug}/draft/"
    codes = [c.code for c in policy.draft().categories.all()]
    assert codes == [f"S{i}" for i in range(1, 15)]
    assert policy.latest_version() is None


def test_creating_a_blank_policy_needs_a_name(editor, db):
    response = editor.post("/policies/new/", {"preset": "blank", "name": ""})
    assert response.status_code == 400
    assert "A blank policy needs a name." in response.content.decode()
    assert not Policy.objects.exists()


def test_a_taken_slug_is_reported_next_to_the_field(editor, make_policy):
    make_policy(slug="acme")
    response = editor.post("/policies/new/", {"preset": "general", "slug": "acme"})
    assert response.status_code == 400
    assert "already exists" in response.content.decode()


def test_adding_a_category_returns_the_list_with_the_new_row(editor, make_policy):
    policy = make_policy()
    response = add(editor, policy, code="S9", name="Phishing", violating_examples="Write a fake bank email\n\nClone a login page")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<section id="categories"' in html and "Phishing" in html and "<html" not in html
    category = policy.draft().categories.get(code="S9")
    assert category.violating_examples == ["Write a fake bank email", "Clone a login page"]
    assert category.position > policy.draft().categories.get(code="S2").position
    assert response["HX-Trigger"] == "draft-changed"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"code": ""}, "A code is required."),
        ({"code": "S 1"}, "no spaces or commas"),
        ({"code": "a,b"}, "no spaces or commas"),
        ({"code": "x" * 41}, "1-40 letters"),
        ({"code": "S1"}, "already used in this version"),
        ({"code": "s1"}, "already used in this version"),
        ({"code": "none"}, "reserved"),
        ({"name": "  "}, "A name is required."),
        ({"severity": "apocalyptic"}, "Select a valid choice"),
        ({"action": "ban"}, "Select a valid choice"),
    ],
)
def test_invalid_category_fields_are_explained_next_to_the_field(editor, make_policy, fields, message):
    policy = make_policy()
    response = add(editor, policy, **fields)
    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    field = next(iter(fields))
    assert f'data-field="{field}"' in html and f'id="id_new-{field}-error"' in html
    assert policy.draft().categories.count() == 2


def test_editing_a_category_returns_its_row(editor, make_policy):
    policy = make_policy()
    category = policy.draft().categories.get(code="S2")
    form = editor.get(f"/policies/{policy.slug}/draft/categories/{category.pk}/edit/", **HX)
    assert form.status_code == 200 and 'class="category editing"' in form.content.decode()
    prefix = f"c{category.pk}"
    response = editor.post(
        f"/policies/{policy.slug}/draft/categories/{category.pk}/edit/",
        {f"{prefix}-code": "S2", f"{prefix}-name": "Fraud", f"{prefix}-description": "Scams.", f"{prefix}-severity": "high",
         f"{prefix}-action": "block", f"{prefix}-allowed_examples": "How do scams work?"},
        **HX,
    )
    assert response.status_code == 200
    assert f'id="category-{category.pk}"' in response.content.decode()
    category.refresh_from_db()
    assert (category.name, category.severity, category.action, category.allowed_examples) == ("Fraud", "high", "block", ["How do scams work?"])


def test_a_category_may_keep_its_own_code_when_edited(editor, make_policy):
    policy = make_policy()
    category = policy.draft().categories.get(code="S1")
    prefix = f"c{category.pk}"
    response = editor.post(
        f"/policies/{policy.slug}/draft/categories/{category.pk}/edit/",
        {f"{prefix}-code": "S1", f"{prefix}-name": "Renamed", f"{prefix}-severity": "low", f"{prefix}-action": "allow"},
        **HX,
    )
    assert response.status_code == 200


def test_editing_to_a_duplicate_code_is_refused_with_the_form(editor, make_policy):
    policy = make_policy()
    category = policy.draft().categories.get(code="S2")
    prefix = f"c{category.pk}"
    response = editor.post(
        f"/policies/{policy.slug}/draft/categories/{category.pk}/edit/",
        {f"{prefix}-code": "S1", f"{prefix}-name": "Dup", f"{prefix}-severity": "low", f"{prefix}-action": "allow"},
        **HX,
    )
    assert response.status_code == 422
    assert "already used in this version" in response.content.decode()
    category.refresh_from_db()
    assert category.code == "S2"


def test_moving_a_category_down_swaps_it_with_the_next(editor, make_policy):
    policy = make_policy(codes=("A", "B", "C"))
    b = policy.draft().categories.get(code="B")
    response = editor.post(f"/policies/{policy.slug}/draft/categories/{b.pk}/move/", {"direction": "down"}, **HX)
    assert response.status_code == 200
    assert [c.code for c in policy.draft().categories.all()] == ["A", "C", "B"]
    editor.post(f"/policies/{policy.slug}/draft/categories/{b.pk}/move/", {"direction": "up"}, **HX)
    editor.post(f"/policies/{policy.slug}/draft/categories/{b.pk}/move/", {"direction": "up"}, **HX)
    assert [c.code for c in policy.draft().categories.all()] == ["B", "A", "C"]


def test_moving_the_first_category_up_changes_nothing(editor, make_policy):
    policy = make_policy(codes=("A", "B"))
    a = policy.draft().categories.get(code="A")
    editor.post(f"/policies/{policy.slug}/draft/categories/{a.pk}/move/", {"direction": "up"}, **HX)
    assert [c.code for c in policy.draft().categories.all()] == ["A", "B"]


def test_an_unknown_move_direction_is_a_400(editor, make_policy):
    policy = make_policy()
    category = policy.draft().categories.first()
    response = editor.post(f"/policies/{policy.slug}/draft/categories/{category.pk}/move/", {"direction": "sideways"}, **HX)
    assert response.status_code == 400 and b"direction" in response.content


def test_deleting_a_category_removes_it_from_the_draft_only(editor, make_policy):
    policy = make_policy(publish=True)
    category = policy.draft().categories.get(code="S1")
    response = editor.post(f"/policies/{policy.slug}/draft/categories/{category.pk}/delete/", **HX)
    assert response.status_code == 200 and f'id="category-{category.pk}"' not in response.content.decode()
    assert [c.code for c in policy.draft().categories.all()] == ["S2"]
    assert [c.code for c in policy.latest_version().categories.all()] == ["S1", "S2"]


def test_categories_of_published_versions_are_not_editable_through_the_editor(editor, make_policy):
    policy = make_policy(publish=True)
    published = policy.latest_version().categories.first()
    assert editor.get(f"/policies/{policy.slug}/draft/categories/{published.pk}/edit/", **HX).status_code == 404
    assert editor.post(f"/policies/{policy.slug}/draft/categories/{published.pk}/delete/", **HX).status_code == 404


def test_the_draft_header_is_edited_inline(editor, make_policy):
    policy = make_policy()
    response = editor.post(f"/policies/{policy.slug}/draft/header/", {"name": "Acme chat", "description": "For the chat app."}, **HX)
    assert response.status_code == 200 and "Acme chat" in response.content.decode()
    assert policy.draft().to_spec().name == "Acme chat"
    empty = editor.post(f"/policies/{policy.slug}/draft/header/", {"name": "", "description": ""}, **HX)
    assert empty.status_code == 422


def test_publishing_needs_a_change_note(editor, make_policy):
    policy = make_policy()
    response = editor.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": ""}, follow=True)
    assert response.redirect_chain[-1][0].startswith(f"/policies/{policy.slug}/draft/")
    assert "Describe the change" in response.content.decode()
    assert policy.latest_version() is None


def test_publishing_redirects_to_the_new_version(editor, make_policy):
    policy = make_policy()
    response = editor.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "First rules"})
    assert response.status_code == 302 and response["Location"] == f"/policies/{policy.slug}/versions/1/"
    page = editor.get(response["Location"]).content.decode()
    assert "First rules" in page and "version 1" in page


def test_publishing_an_unchanged_draft_is_refused(editor, make_policy):
    policy = make_policy(publish=True)
    response = editor.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "again"}, follow=True)
    assert "nothing to publish" in response.content.decode()
    assert policy.latest_version().number == 1


def test_a_refused_publish_redirects_back_to_the_editor_with_the_reason_and_the_note(editor, make_policy):
    policy = make_policy(publish=True)
    response = editor.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "my careful note"})
    assert response.status_code == 302 and response["Location"] == f"/policies/{policy.slug}/draft/#publish"
    page = editor.get(response["Location"]).content.decode()
    assert "Not published: The draft is identical to version 1" in page
    assert "my careful note" in page


def test_the_publish_button_is_disabled_with_a_reason_when_the_draft_equals_the_latest_version(editor, make_policy):
    policy = make_policy(publish=True)
    page = editor.get(f"/policies/{policy.slug}/draft/").content.decode()
    assert re.search(r'<button type="submit" class="primary" disabled[^>]*>Publish version 2</button>', page)
    assert "Nothing to publish: the draft equals version 1" in page


def test_the_publish_button_is_enabled_again_once_the_draft_changes(editor, make_policy):
    policy = make_policy(publish=True)
    add(editor, policy, code="S7", name="New rule")
    buttons = editor.get(f"/policies/{policy.slug}/draft/status/?part=publish", **HX).content.decode()
    assert re.search(r'<button type="submit" class="primary">Publish version 2</button>', buttons)
    assert "Nothing to publish" not in buttons


def test_rollback_from_the_history_publishes_a_copy(editor, make_policy):
    policy = make_policy(publish=True)
    category = policy.draft().categories.get(code="S1")
    editor.post(f"/policies/{policy.slug}/draft/categories/{category.pk}/delete/", **HX)
    editor.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "drop S1"})
    response = editor.post(f"/policies/{policy.slug}/versions/1/rollback/")
    assert response.status_code == 302
    latest = policy.latest_version()
    assert latest.number == 3 and latest.to_spec() == policy.versions.get(number=1).to_spec()


def test_discarding_draft_changes_restores_the_latest_version(editor, make_policy):
    policy = make_policy(publish=True)
    add(editor, policy, code="S7", name="Temporary")
    editor.post(f"/policies/{policy.slug}/draft/discard/")
    assert policy.draft().to_spec() == policy.latest_version().to_spec()


def test_the_detail_page_shows_the_production_model(client_as, make_policy):
    from guard.models import ModelVersion

    policy = make_policy(publish=True)
    client = client_as("viewer")
    assert "deployment default" in client.get(f"/policies/{policy.slug}/").content.decode()
    policy.production_model = ModelVersion.objects.create(name="guard-2026-11", status="production")
    policy.save()
    html = client.get(f"/policies/{policy.slug}/").content.decode()
    assert "guard-2026-11" in html


def test_an_unknown_version_is_a_404(client_as, make_policy):
    policy = make_policy(publish=True)
    client = client_as("viewer")
    assert client.get(f"/policies/{policy.slug}/versions/7/").status_code == 404
    assert client.get(f"/policies/{policy.slug}/diff/?old=abc&new=1").status_code == 404
