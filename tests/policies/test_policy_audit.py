"""The audit log sees every policy change: creation, each draft edit, publishing, and a rollback as a rollback."""

from __future__ import annotations

import io
import json
import re

import pytest

from moderation.models import AuditLog
from policies.models import Policy

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def editor(client_as):
    return client_as("policy_editor")


def entries(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action).order_by("at", "id"))


def test_creating_a_policy_from_a_preset_is_audited(editor, db):
    editor.post("/policies/new/", {"preset": "general", "name": "Kids chat", "slug": "", "description": ""})
    policy = Policy.objects.get()
    [entry] = entries("policy.create")
    assert entry.actor_label == "policy_editor-user" and entry.object_type == "policy" and entry.object_id == str(policy.pk)
    assert entry.after["from"] == "preset general" and entry.after["slug"] == policy.slug and entry.after["categories"]


def test_importing_a_policy_file_is_audited_as_a_creation(editor, db):
    document = {"name": "Imported", "categories": [{"code": "X1", "name": "One", "description": "d"}]}
    upload = io.BytesIO(json.dumps(document).encode())
    upload.name = "policy.json"
    editor.post("/policies/import/", {"file": upload})
    [entry] = entries("policy.create")
    assert entry.after["from"] == "imported from a file" and entry.after["categories"] == ["X1"]


def test_adding_editing_moving_and_deleting_a_draft_category_are_audited(editor, make_policy):
    policy = make_policy()
    base = f"/policies/{policy.slug}/draft/categories/"
    editor.post(base, {"new-code": "S9", "new-name": "Phishing", "new-severity": "medium", "new-action": "flag"}, **HX)
    s9 = policy.draft().categories.get(code="S9")
    editor.post(f"{base}{s9.pk}/edit/", {f"c{s9.pk}-code": "S9", f"c{s9.pk}-name": "Phishing", f"c{s9.pk}-description": "",
                                          f"c{s9.pk}-severity": "high", f"c{s9.pk}-action": "block"}, **HX)
    editor.post(f"{base}{s9.pk}/move/", {"direction": "up"}, **HX)
    editor.post(f"{base}{s9.pk}/delete/", **HX)
    changes = [e.after["change"] for e in entries("policy.draft_edit")]
    assert changes == ["category S9 added", "category S9 edited", "category S9 moved up", "category S9 deleted"]
    edited = entries("policy.draft_edit")[1]
    assert edited.before == {"code": "S9", "severity": "medium", "action": "flag"}
    assert edited.after == {"change": "category S9 edited", "code": "S9", "severity": "high", "action": "block"}
    moved = entries("policy.draft_edit")[2]
    assert moved.before == {"order": ["S1", "S2", "S9"]} and moved.after["order"] == ["S1", "S9", "S2"]


def test_editing_the_drafts_name_and_discarding_the_draft_are_audited(editor, make_policy):
    policy = make_policy(publish=True)
    editor.post(f"/policies/{policy.slug}/draft/header/", {"name": "Renamed", "description": "new words"}, **HX)
    editor.post(f"/policies/{policy.slug}/draft/discard/")
    renamed, discarded = entries("policy.draft_edit")
    assert renamed.before["name"] == "acme policy" and renamed.after["name"] == "Renamed"
    assert discarded.after == {"change": "draft changes discarded (back to version 1)"}


def test_a_rollback_is_logged_as_a_rollback_not_a_publish(editor, make_policy, client_as):
    policy = make_policy(publish=True)
    policy.draft().categories.get(code="S2").delete()
    policy.publish(change_note="drop S2")
    editor.post(f"/policies/{policy.slug}/versions/1/rollback/")
    page = client_as("admin").get("/audit/", {"object_type": "policyversion"}).content.decode()
    assert re.findall(r'<tr class="audit-event" data-action="([^"]+)"', page) == ["policy.rollback", "policy.publish", "policy.publish"]
    assert "<dt>equal to version</dt>" in page
    only_rollbacks = client_as("admin").get("/audit/", {"action": "policy.rollback"}).content.decode()
    assert re.findall(r'data-action="([^"]+)"', only_rollbacks) == ["policy.rollback"]
    assert policy.versions.get(number=3).rollback_of.number == 1


def test_audit_entries_of_a_policy_link_to_its_page(editor, client_as, db):
    editor.post("/policies/new/", {"preset": "general", "name": "Kids chat", "slug": "kids", "description": ""})
    page = client_as("admin").get("/audit/", {"action": "policy.create"}).content.decode()
    assert 'href="/policies/kids/"' in page


def test_get_of_the_new_policy_url_goes_to_the_form(editor, db):
    response = editor.get("/policies/new/")
    assert response.status_code == 302 and response["Location"] == "/policies/#create-policy"


def test_get_of_the_new_policy_url_tells_a_viewer_it_needs_an_editor(client_as, db):
    response = client_as("viewer").get("/policies/new/")
    assert response.status_code == 403
