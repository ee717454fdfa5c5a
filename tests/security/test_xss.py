"""HTML/JS submitted as policy, category, item, note and key text is escaped on every page."""

from __future__ import annotations

import json
import re

import pytest
from django.db import transaction

from guard import contract
from tests.security.conftest import PAGE_ROUTES, client_for, url_for

SCRIPT = '<script>alert("xss")</script>'
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
# What must never reach a page unescaped.
RAW = ("<script>alert(", "<img src=x onerror")


@pytest.fixture
def hostile_site(site, settings):
    """The ``site`` objects plus a policy, items, a review decision, a key and jobs full of payloads."""
    from evaluation.models import EvaluationRun
    from moderation import keys
    from moderation.models import Item, ReviewTask
    from moderation.verdicts import category_actions, store_verdict
    from policies.models import Category, Policy

    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    settings.MODERATION_DOUBLE_REVIEW_RATE = 0.0
    policy = Policy.objects.create(slug="hostile", name=SCRIPT, description=ATTRIBUTE)
    draft = policy.draft()
    Category.objects.create(
        version=draft, position=0, code="X1", name=SCRIPT, description=ATTRIBUTE,
        violating_examples=[SCRIPT], allowed_examples=[ATTRIBUTE], action="flag",
    )
    version = policy.publish(change_note=SCRIPT)
    category = policy.draft().categories.first()

    # Items arrive through the API, like a client's would.
    _, secret = keys.create_key(SCRIPT)
    api = client_for(None, site, headers={"Authorization": f"Bearer {secret}"})
    body = {"policy": "hostile", "items": [{"prompt": SCRIPT, "response": ATTRIBUTE, "external_id": SCRIPT}] * 2}
    response = api.post("/api/v1/items", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    items = list(Item.objects.filter(pk__in=response.json()["ids"]).order_by("pk"))
    verdict = contract.Verdict(
        prompt_label="unsafe", response_label="unsafe", refusal_label="compliance", categories=["X1"],
        explanation=f"{SCRIPT} {ATTRIBUTE}", confidence=0.9, mode="reason",
    )
    for item in items:
        Item.objects.filter(pk=item.pk).update(status="running")
        store_verdict(item, verdict, category_actions(version), SCRIPT, 5)

    # A reviewer overturns the first item with a hostile note; the second stays in the queue.
    ReviewTask.objects.filter(pk=site["task"].pk).update(state="done")  # the walk's own task: out of the way
    reviewer = client_for("reviewer", site)
    assert reviewer.post("/review/next/", follow=True).status_code == 200
    task = ReviewTask.objects.get(item=items[0])
    decided = reviewer.post(
        f"/review/{task.pk}/decide/",
        {"outcome": "override", "prompt_label": "safe", "response_label": "safe", "refusal_label": "compliance", "note": SCRIPT},
    )
    assert decided.status_code in (200, 302)
    assert task.item.decisions.get().note == SCRIPT

    # An admin names a key with a payload through the page.
    assert client_for("admin", site).post("/api-keys/", {"name": ATTRIBUTE}).status_code == 200
    run = EvaluationRun.objects.create(status="failed", model=SCRIPT, error=ATTRIBUTE, done=0, total=1)
    pks = {"policies": category.pk, "evaluation": run.pk, "guard": site["model"].pk}
    try:
        from trainer.models import TrainingJob  # type: ignore[import-not-found]

        with transaction.atomic():
            job = TrainingJob.objects.create(recipe="sft", status="failed", policy="hostile", error=SCRIPT, log_tail=ATTRIBUTE)
        pks["trainer"] = job.pk
    except Exception:  # noqa: BLE001 - the trainer app may not define jobs (yet)
        pks["trainer"] = site["pk"].get("trainer", 1)
    open_task = ReviewTask.objects.get(item=items[1])
    return {**site, "policy": policy, "version": version, "category": category, "item": items[0], "task": open_task, "pk": pks}


def assert_escaped(label: str, html: str) -> None:
    for raw in RAW:
        assert raw not in html, f"{label}: unescaped payload {raw!r} at …{html[max(0, html.find(raw) - 80): html.find(raw) + 40]}…"


def test_no_page_shows_a_payload_unescaped(hostile_site):
    shown_on = []
    for role in ("admin", "reviewer"):
        client = client_for(role, hostile_site)
        for route in PAGE_ROUTES:
            if route.name.startswith("admin:"):
                continue
            url = url_for(route, hostile_site)
            for params in ({}, {"q": "script"}):
                response = client.get(url, params, headers={})
                if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
                    continue
                html = response.content.decode()
                assert_escaped(f"{role} GET {url}", html)
                if "&lt;script&gt;alert(" in html:
                    shown_on.append(route.name)
            htmx = client.get(url, headers={"HX-Request": "true"})
            if htmx.status_code == 200 and "text/html" in htmx.get("Content-Type", ""):
                assert_escaped(f"{role} htmx GET {url}", htmx.content.decode())
    # The payloads were really on the pages that show these objects (escaped).
    expected = {"policies:detail", "policies:editor", "moderation:item", "moderation:items", "moderation:api-keys"}
    assert expected <= set(shown_on), f"payload not shown (escaped) on {expected - set(shown_on)}"


def test_review_panel_escapes_the_item_and_the_guards_explanation(hostile_site):
    reviewer = client_for("reviewer", hostile_site)
    response = reviewer.post("/review/next/", follow=True)
    html = response.content.decode()
    assert_escaped("review panel", html)
    assert "&lt;script&gt;alert(" in html
    task_page = reviewer.get(f"/review/{hostile_site['task'].pk}/").content.decode()
    assert_escaped("review task page", task_page)


def test_overview_escapes_model_labels(hostile_site):
    html = client_for("viewer", hostile_site).get("/").content.decode()
    assert_escaped("overview", html)
    assert "&lt;script&gt;alert(" in html  # the verdicts' model label, in the overturn table


def test_policy_diff_and_export_escape_or_encode(hostile_site):
    admin = client_for("admin", hostile_site)
    html = admin.get("/policies/hostile/diff/").content.decode()
    assert_escaped("diff", html)
    export = admin.get("/policies/hostile/export/")
    assert "text/html" not in export["Content-Type"], "an export of user text must not be served as HTML"
    assert re.search(r"json|octet-stream|text/plain", export["Content-Type"])
