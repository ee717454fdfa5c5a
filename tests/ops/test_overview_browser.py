"""The overview page in a real browser: it updates itself, and a busy day renders."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from django.utils import timezone

from evaluation.models import EvaluationRun
from guard.models import ModelVersion
from moderation.models import ReviewTask
from ops.models import WorkerHeartbeat
from tests.ops.conftest import hours_ago, publish_policy

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.browser
def test_overview_updates_itself_without_reloading(signed_in_page, judged):
    page = signed_in_page("viewer")
    page.goto("/")
    backlog = page.locator("#stat-backlog .big")
    assert backlog.inner_text() == "0"
    page.evaluate("window.__notReloaded = true")
    judged(review="flag")
    page.wait_for_function("document.querySelector('#stat-backlog .big').innerText === '1'", timeout=25_000)
    assert page.evaluate("window.__notReloaded") is True


@pytest.mark.browser
def test_window_switch_shows_the_week_without_reloading(signed_in_page, judged):
    page = signed_in_page("viewer")
    page.goto("/")
    page.evaluate("window.__notReloaded = true")
    page.click("a[data-window='7d']")
    page.wait_for_selector("a[data-window='7d'].current")
    assert "last 7 days" in page.locator("#stat-items").inner_text()
    assert page.url.endswith("?window=7d")
    assert page.evaluate("window.__notReloaded") is True


def seed_a_busy_day(judged, make_user) -> None:
    rng = random.Random(7)
    kids = publish_policy("kids-chat", {"K1": "block", "K2": "flag", "K3": "flag"}, name="Kids chat")
    model = ModelVersion.objects.create(name="kids-chat-sft-3", status="production", promoted_at=timezone.now())
    kids.policy.production_model = model
    kids.policy.save()
    reviewers = [make_user(name, "reviewer") for name in ("amara", "jonas", "li")]
    for hour in range(24):
        traffic = 6 + int(5 * (1 + math.sin(hour / 3.5)))
        for _ in range(traffic):
            at = hours_ago(hour + rng.random())
            on_kids = rng.random() < 0.4
            codes = ("K1", "K2", "K3") if on_kids else ("S1", "S2")
            categories = tuple(c for c in codes if rng.random() < 0.12)
            reviewed = categories and rng.random() < 0.6
            judged(
                at=at,
                categories=categories,
                version=kids if on_kids else None,
                model="kids-chat-sft-3" if on_kids else "embedded",
                review="flag" if categories else None,
                decision=(("override" if rng.random() < 0.25 else "agree") if reviewed and hour > 0 else None),
                reviewer=rng.choice(reviewers),
            )
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="celery@gpu-1", queues="gpu-infer", seen_at=now, started_at=hours_ago(30))
    WorkerHeartbeat.objects.create(hostname="celery@web-1", queues="default", seen_at=now, started_at=hours_ago(30))
    WorkerHeartbeat.objects.create(hostname="celery@gpu-2", queues="gpu-train", seen_at=hours_ago(0.2), started_at=hours_ago(6))
    EvaluationRun.objects.create(status="running", model="kids-chat-sft-3", done=340, total=1000)
    assert ReviewTask.objects.filter(state="open").exists()


@pytest.mark.browser
def test_overview_renders_a_busy_day(signed_in_page, judged, make_user):
    seed_a_busy_day(judged, make_user)
    page = signed_in_page("admin")
    page.set_viewport_size({"width": 1280, "height": 1500})
    page.goto("/")
    for chart in ("#chart-items", "#chart-flags", "#chart-reviews"):
        box = page.locator(f"{chart} svg").bounding_box()
        assert box and box["width"] > 250 and box["height"] > 100
    assert page.locator("#workers").get_by_text("lost").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
