"""The diff between two versions: categories added, removed and changed, field by field."""

from __future__ import annotations

from policies.diffing import diff_documents, text_segments

HX = {"HTTP_HX_REQUEST": "true"}


def doc(*categories: dict, name: str = "P", description: str = "") -> dict:
    full = [{"description": "", "violating_examples": [], "allowed_examples": [], "severity": "medium", "action": "flag", **c} for c in categories]
    return {"name": name, "description": description, "categories": full}


def test_identical_versions_have_no_differences():
    same = doc({"code": "S1", "name": "A"})
    assert diff_documents(same, same).is_empty


def test_added_removed_and_changed_categories_are_reported():
    old = doc({"code": "S1", "name": "Violence"}, {"code": "S2", "name": "Fraud"})
    new = doc({"code": "S1", "name": "Violence", "action": "block"}, {"code": "S3", "name": "Hate"})
    diff = diff_documents(old, new)
    assert [(c.status, c.code) for c in diff.categories] == [("changed", "S1"), ("added", "S3"), ("removed", "S2")]
    assert [(f.field, f.segments) for f in diff.categories[0].fields] == [("action", [("del", "flag"), ("add", "block")])]
    assert diff.summary == "1 added, 1 removed, 1 changed."


def test_text_changes_are_word_level():
    assert text_segments("Helps plan violence.", "Helps plan or praise violence.") == [
        ("eq", "Helps plan "), ("add", "or praise "), ("eq", "violence."),
    ]


def test_example_lists_are_diffed_line_by_line():
    old = doc({"code": "S1", "name": "A", "violating_examples": ["one", "two"]})
    new = doc({"code": "S1", "name": "A", "violating_examples": ["one", "three"]})
    (change,) = diff_documents(old, new).categories
    assert change.fields[0].segments == [("eq", "one"), ("del", "two"), ("add", "three")]


def test_reordering_reports_the_moved_category():
    old = doc({"code": "A", "name": "a"}, {"code": "B", "name": "b"}, {"code": "C", "name": "c"})
    new = doc({"code": "C", "name": "c"}, {"code": "A", "name": "a"}, {"code": "B", "name": "b"})
    diff = diff_documents(old, new)
    assert [(c.code, c.moved) for c in diff.categories] == [("C", (3, 1))]


def test_a_pure_move_is_moved_not_changed():
    old = doc({"code": "A", "name": "a"}, {"code": "B", "name": "b"}, {"code": "C", "name": "c"})
    new = doc({"code": "C", "name": "c"}, {"code": "A", "name": "a"}, {"code": "B", "name": "b"})
    diff = diff_documents(old, new)
    assert [(c.status, c.code, c.fields) for c in diff.categories] == [("moved", "C", [])]
    assert diff.summary == "1 moved."


def test_a_moved_category_whose_content_changed_is_changed_and_moved():
    old = doc({"code": "A", "name": "a"}, {"code": "B", "name": "b"})
    new = doc({"code": "B", "name": "b", "action": "block"}, {"code": "A", "name": "a"})
    [change] = diff_documents(old, new).categories
    assert (change.status, change.moved) == ("changed", (2, 1))
    assert diff_documents(old, new).summary == "1 changed, 1 moved."


def test_the_diff_page_badges_a_pure_move_as_moved(client_as, make_policy):
    policy = make_policy(publish=True)
    client = client_as("policy_editor")
    s2 = policy.draft().categories.get(code="S2")
    client.post(f"/policies/{policy.slug}/draft/categories/{s2.pk}/move/", {"direction": "up"}, **HX)
    html = client.get(f"/policies/{policy.slug}/diff/", {"old": 1, "new": "draft"}).content.decode()
    assert '<span class="badge status-moved">moved</span> <code>S2</code>' in html
    assert "status-changed" not in html


def test_a_policy_rename_is_a_header_change():
    diff = diff_documents(doc(name="Old"), doc(name="New"))
    assert [c.field for c in diff.header] == ["name"]


def test_the_diff_page_highlights_field_level_changes(client_as, make_policy):
    policy = make_policy(publish=True)
    client = client_as("policy_editor")
    s1 = policy.draft().categories.get(code="S1")
    prefix = f"c{s1.pk}"
    client.post(
        f"/policies/{policy.slug}/draft/categories/{s1.pk}/edit/",
        {f"{prefix}-code": "S1", f"{prefix}-name": "Category S1", f"{prefix}-description": "What S1 strictly forbids.",
         f"{prefix}-severity": "medium", f"{prefix}-action": "block"},
        **HX,
    )
    client.post(f"/policies/{policy.slug}/draft/publish/", {"change_note": "stricter S1"})
    html = client.get(f"/policies/{policy.slug}/diff/?old=1&new=2").content.decode()
    assert '<ins class="diff-add">strictly </ins>' in html
    assert '<del class="diff-del">flag</del>' in html and '<ins class="diff-add">block</ins>' in html
    assert "1 changed." in html and "stricter S1" in html


def test_the_diff_page_compares_a_version_with_the_draft_by_default(client_as, make_policy):
    policy = make_policy(publish=True)
    response = client_as("viewer").get(f"/policies/{policy.slug}/diff/")
    assert response.status_code == 200 and "No differences." in response.content.decode()
