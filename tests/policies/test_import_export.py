"""Policy JSON: export round-trips; an invalid file lists EVERY problem and saves nothing."""

from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from policies.documents import parse_document
from policies.models import Category, Policy, PolicyVersion

MALFORMED = {
    "format": "guardsite.policy/v0",
    "name": "",
    "slug": "has spaces",
    "colour": "red",
    "categories": [
        {"code": "S1", "name": "Violence", "severity": "extreme"},
        {"code": "S1", "name": "Duplicate code"},
        {"name": "Missing code", "action": "ban"},
        {"code": "bad code!", "name": "Bad code", "violating_examples": "not a list"},
        {"code": "S5", "name": 7, "allowed_examples": ["ok", 3, ""]},
        "not an object",
        {"code": "S6", "name": "Typo", "descripton": "misspelt field"},
    ],
}
EXPECTED_ERRORS = {
    ("format", "must be 'guardsite.policy/v1', got \"guardsite.policy/v0\""),
    ("name", "A name is required."),
    ("slug", "Use 1-80 letters, digits, '-' or '_'."),
    ("colour", "unknown field"),
    ("categories[0].severity", '"extreme" is not one of low, medium, high, critical'),
    ("categories[1].code", "Code 'S1' is already used in this version."),
    ("categories[2].code", "is required"),
    ("categories[2].action", '"ban" is not one of block, flag, allow'),
    ("categories[3].code", "no spaces or commas"),
    ("categories[3].violating_examples", "must be a list of strings, got a string"),
    ("categories[4].name", "must be a string, got a number"),
    ("categories[4].allowed_examples[1]", "must be a string, got a number"),
    ("categories[4].allowed_examples[2]", "must not be empty"),
    ("categories[5]", "must be an object, got a string"),
    ("categories[6].descripton", "unknown field"),
}


def test_parsing_a_malformed_document_reports_every_error():
    document, errors = parse_document(json.dumps(MALFORMED))
    assert document is None
    found = [(e.path, e.message) for e in errors]
    for path, fragment in EXPECTED_ERRORS:
        assert any(p == path and fragment in m for p, m in found), f"missing error at {path}: {fragment}\n{found}"
    assert len(found) == len(EXPECTED_ERRORS)


def test_importing_a_malformed_file_shows_every_error_and_saves_nothing(client_as, db):
    upload = SimpleUploadedFile("policy.json", json.dumps(MALFORMED).encode(), content_type="application/json")
    response = client_as("policy_editor").post("/policies/import/", {"file": upload})
    assert response.status_code == 400
    html = response.content.decode()
    assert f"{len(EXPECTED_ERRORS)} problems" in html
    for path, _ in EXPECTED_ERRORS:
        assert f"<code>{path}</code>" in html, path
    assert html.count('class="import-error"') == len(EXPECTED_ERRORS)
    assert not Policy.objects.exists() and not PolicyVersion.objects.exists() and not Category.objects.exists()


def test_a_file_that_is_not_json_is_explained(client_as, db):
    response = client_as("policy_editor").post("/policies/import/", {"text": '{"name": "x", "categories": [}'})
    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode() and "line 1" in response.content.decode()


def test_importing_into_a_draft_with_errors_leaves_the_draft_alone(client_as, make_policy):
    policy = make_policy()
    response = client_as("policy_editor").post(f"/policies/{policy.slug}/import/", {"text": json.dumps(MALFORMED)})
    assert response.status_code == 400
    assert [c.code for c in policy.draft().categories.all()] == ["S1", "S2"]


def test_an_exported_version_imports_as_an_equal_policy(client_as, make_policy):
    policy = make_policy(preset="mlcommons_hazards", slug="ml", publish=True)
    client = client_as("policy_editor")
    exported = client.get("/policies/ml/export/?version=1")
    assert exported.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="ml-v1.json"'
    document = exported.json()
    assert document["format"] == "guardsite.policy/v1" and document["version"] == 1
    # Names are unique: the copy is imported under a name of its own.
    response = client.post("/policies/import/", {"text": exported.content.decode(), "slug": "ml-copy", "name": "ML copy"})
    assert response.status_code == 302
    copy = Policy.objects.get(slug="ml-copy")
    assert copy.name == "ML copy"
    assert copy.draft().to_spec().categories == policy.latest_version().to_spec().categories


def test_importing_with_a_taken_slug_is_refused(client_as, make_policy):
    make_policy(slug="acme")
    text = json.dumps({"slug": "acme", "name": "Acme", "categories": [{"code": "A", "name": "a"}]})
    response = client_as("policy_editor").post("/policies/import/", {"text": text})
    assert response.status_code == 400 and "already exists" in response.content.decode()
    assert Policy.objects.count() == 1


def test_importing_into_a_draft_replaces_its_categories(client_as, make_policy):
    policy = make_policy(publish=True)
    text = json.dumps({
        "name": "Acme v2",
        "categories": [{"code": "X1", "name": "Only one", "severity": "critical", "action": "block", "violating_examples": ["a", "b"]}],
    })
    response = client_as("policy_editor").post(f"/policies/{policy.slug}/import/", {"text": text})
    assert response.status_code == 302
    draft = policy.draft()
    assert [(c.code, c.severity, c.action, c.violating_examples) for c in draft.categories.all()] == [("X1", "critical", "block", ["a", "b"])]
    assert draft.to_spec().name == "Acme v2"
    assert [c.code for c in policy.latest_version().categories.all()] == ["S1", "S2"]


def test_optional_fields_take_their_defaults():
    document, errors = parse_document('{"name": "Minimal", "categories": [{"code": "S1", "name": "Violence"}]}')
    assert errors == []
    assert document.categories == [{
        "code": "S1", "name": "Violence", "description": "", "violating_examples": [], "allowed_examples": [],
        "severity": "medium", "action": "flag",
    }]
