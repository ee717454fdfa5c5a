"""The audit log page (/audit/): every app's events, filterable, readable, exportable; admins only."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from evaluation.models import EvaluationRun
from guard.models import ModelVersion
from moderation import keys, review
from moderation.models import AuditLog, Item
from moderation.verdicts import category_actions, store_verdict
from policies.models import PolicyVersion
from tests.moderation.conftest import guard_verdict
from tests.ops.conftest import publish_policy
from trainer.models import RegistryEvent, TrainingJob


@pytest.fixture
def history(db, role_users, settings):
    """One event of each kind: a published policy, an API key, a review override, a promotion,
    a training job and an evaluation run, by different people."""
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    settings.MODERATION_DOUBLE_REVIEW_RATE = 0.0
    admin, editor, reviewer = role_users["admin"], role_users["policy_editor"], role_users["reviewer"]
    version = publish_policy("house")
    PolicyVersion.objects.filter(pk=version.pk).update(published_by=editor)
    key, _ = keys.create_key("shop frontend", admin)
    AuditLog.record(admin, "api_key.create", key, after={"name": key.name, "prefix": key.prefix})
    item = Item.objects.create(policy_version=version, prompt="How do I pick a lock?", status=Item.Status.RUNNING, attempts=1)
    store_verdict(item, guard_verdict(), category_actions(version), "embedded", 12)
    task = review.claim_next(reviewer)
    review.decide(task.pk, reviewer, "override", review.Labels("safe", categories=[]), note="a locksmith asking")
    model = ModelVersion.objects.create(name="sft-job1", adapter_path="/tmp/a")
    RegistryEvent.objects.create(action="promote", model_version=model, previous="embedded", user=admin, note="better on S2")
    job = TrainingJob.objects.create(recipe="sft", data_sources=["reviewed:house"], created_by=editor)
    run = EvaluationRun.objects.create(model="sft-job1", data=["/data/x.jsonl"], created_by=editor)
    return {"version": version, "key": key, "item": item, "task": task, "model": model, "job": job, "run": run}


def actions_listed(response) -> list[str]:
    return re.findall(r'<tr class="audit-event" data-action="([^"]+)"', response.content.decode())


def test_the_audit_page_lists_what_happened_in_every_app_newest_first(client_as, history):
    response = client_as("admin").get("/audit/")
    assert response.status_code == 200
    assert actions_listed(response) == [
        "evaluation.start", "training.start", "model.promote", "review.override", "api_key.create", "policy.publish",
    ]


def test_each_event_says_who_and_links_to_its_object(client_as, history):
    html = client_as("admin").get("/audit/").content.decode()
    assert f'href="/items/{history["item"].pk}/">item {history["item"].pk}</a>' in html
    assert 'href="/policies/house/versions/1/">policy house v1</a>' in html
    assert 'href="/models/sft-job1/">model sft-job1</a>' in html
    assert f'href="/training/{history["job"].pk}/"' in html and f'href="/evaluations/{history["run"].pk}/"' in html
    assert '<td class="actor">reviewer-user</td>' in html and '<td class="actor">policy_editor-user</td>' in html


def test_details_read_as_keys_and_values_with_what_changed_not_python_dicts(client_as, history):
    html = client_as("admin").get("/audit/", {"action": "review.override"}).content.decode()
    assert "{'" not in html and "['" not in html
    assert "<dt>prompt_label</dt>" in html and "<del>unsafe</del> → <ins>safe</ins>" in html
    assert "<dt>note</dt>" in html and "a locksmith asking" in html
    assert "<del>S2</del> → <ins>—</ins>" in html


@pytest.mark.parametrize("params, expected", [
    ({"actor": "policy_editor-user"}, ["evaluation.start", "training.start", "policy.publish"]),
    ({"actor": "reviewer-user"}, ["review.override"]),
    ({"action": "model.promote"}, ["model.promote"]),
    ({"action": "api_key.create"}, ["api_key.create"]),
    ({"object_type": "item"}, ["review.override"]),
    ({"object_type": "policyversion"}, ["policy.publish"]),
    ({"actor": "admin-user", "object_type": "modelversion"}, ["model.promote"]),
])
def test_the_audit_page_filters_by_actor_action_and_object_type(client_as, history, params, expected):
    assert actions_listed(client_as("admin").get("/audit/", params)) == expected


def test_the_audit_page_filters_by_date_range(client_as, history):
    long_ago = timezone.now() - timedelta(days=40)
    AuditLog.objects.filter(action="api_key.create").update(at=long_ago)
    client = client_as("admin")
    today = timezone.now().date().isoformat()
    assert "api_key.create" not in actions_listed(client.get("/audit/", {"date_from": today}))
    old_day = long_ago.date().isoformat()
    assert actions_listed(client.get("/audit/", {"date_from": old_day, "date_to": old_day})) == ["api_key.create"]


@pytest.mark.parametrize("params, message", [
    ({"date_from": "yesterday"}, "from must be a date like 2026-01-31, not &#x27;yesterday&#x27;"),
    ({"date_from": "2026-02-02", "date_to": "2026-02-01"}, "the date range is empty"),
])
def test_a_filter_that_cannot_apply_is_refused_naming_it(client_as, db, params, message):
    response = client_as("admin").get("/audit/", params)
    assert response.status_code == 400 and message in response.content.decode()


def test_the_csv_export_has_every_matching_event_with_readable_details(client_as, history):
    response = client_as("admin").get("/audit/export.csv", {"actor": "reviewer-user"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in rows] == ["review.override"]
    assert rows[0]["actor"] == "reviewer-user" and rows[0]["url"] == f"/items/{history['item'].pk}/"
    assert "prompt_label: unsafe → safe" in rows[0]["details"] and "note: a locksmith asking" in rows[0]["details"]


def test_the_json_export_uses_the_same_filters_as_the_page(client_as, history):
    response = client_as("admin").get("/audit/export.json", {"object_type": "modelversion"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = json.loads(b"".join(response.streaming_content))
    assert body["filters"] == {"object_type": "modelversion"}
    (event,) = body["events"]
    assert (event["action"], event["actor"], event["object_id"], event["url"]) == ("model.promote", "admin-user", "sft-job1", "/models/sft-job1/")
    assert event["details"]["note"] == "better on S2"


def test_the_json_export_keeps_before_and_after_of_a_change(client_as, history):
    body = json.loads(b"".join(client_as("admin").get("/audit/export.json", {"action": "review.override"}).streaming_content))
    details = body["events"][0]["details"]
    assert details["prompt_label"] == {"before": "unsafe", "after": "safe"}
    assert details["categories"] == {"before": ["S2"], "after": []}


def test_the_exports_include_every_page(client_as, history):
    for n in range(60):
        AuditLog.record(None, "test.bulk", history["item"], after={"n": n})
    client = client_as("admin")
    assert len(actions_listed(client.get("/audit/", {"action": "test.bulk"}))) == 50
    body = json.loads(b"".join(client.get("/audit/export.json", {"action": "test.bulk"}).streaming_content))
    assert len(body["events"]) == 60 and body["events"][0]["actor"] == "system"


@pytest.mark.parametrize("path", ["/audit/", "/audit/export.csv", "/audit/export.json"])
@pytest.mark.parametrize("role, status", [("viewer", 403), ("reviewer", 403), ("policy_editor", 403), ("admin", 200)])
def test_only_admins_read_or_export_the_audit_log(client_as, db, path, role, status):
    assert client_as(role).get(path).status_code == status


@pytest.mark.browser
def test_an_admin_filters_the_audit_log_and_downloads_it_as_csv(signed_in_page, history):
    from playwright.sync_api import expect

    page = signed_in_page("admin")
    page.goto("/audit/")
    page.select_option("select[name=actor]", "reviewer-user")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("tr.audit-event")).to_have_count(1)
    expect(page.locator("tr.audit-event dd.changed", has_text="unsafe → safe")).to_have_count(1)
    with page.expect_download() as download:
        page.click("#export-csv")
    text = open(download.value.path(), encoding="utf-8").read()
    assert text.splitlines()[0] == "at,actor,action,object_type,object_id,url,details"
    assert len(text.strip().splitlines()) == 2 and "review.override" in text


def test_the_top_bar_links_the_audit_log_for_admins_only(client_as, db):
    assert 'href="/audit/"' in client_as("admin").get("/items/").content.decode()
    assert 'href="/audit/"' not in client_as("viewer").get("/items/").content.decode()
