"""The overview page: what it counts, and that it answers fast and updates itself."""

from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone

from guard.models import ModelVersion
from moderation.models import Item, ReviewTask
from ops import metrics
from ops.models import WorkerHeartbeat
from policies.models import Policy
from tests.ops.conftest import hours_ago, publish_policy


def buckets(window: str = "24h") -> metrics.Buckets:
    return metrics.Buckets(metrics.WINDOWS[window], timezone.now())


def test_signing_in_lands_on_the_overview(client, make_user):
    make_user("vera", "viewer")
    response = client.post("/accounts/login/", {"username": "vera", "password": "pw-for-tests-1"}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert b"<h1>Overview</h1>" in response.content


def test_every_role_sees_the_overview(client_as):
    for role in ("admin", "policy_editor", "reviewer", "viewer"):
        assert client_as(role).get("/").status_code == 200


def test_items_per_hour_counts_each_item_in_its_hour(judged):
    for _ in range(3):
        judged(at=hours_ago(2.5))
    judged(at=timezone.now())
    judged(at=hours_ago(30))  # outside the 24 h window
    per_hour = metrics.items_per_hour(buckets())
    assert len(per_hour) == 24
    assert per_hour[-1] == 1
    assert sum(per_hour) == 4
    assert 3 in per_hour[-4:-2]


def test_week_window_reports_items_per_hour_in_six_hour_buckets(judged):
    for _ in range(12):
        judged(at=hours_ago(50))
    per_hour = metrics.items_per_hour(buckets("7d"))
    assert len(per_hour) == 28
    assert sorted(per_hour)[-1] == 2.0  # 12 items in one 6-hour bucket


def test_flag_rate_is_the_share_of_judged_items_naming_each_category(judged):
    now = timezone.now()
    judged(at=now, categories=("S1",))
    judged(at=now, categories=("S1", "S2"))
    judged(at=now, categories=())
    judged(at=now, categories=())
    lines = {line.name: line for line in metrics.flag_rate_per_category(buckets())}
    assert lines["house S1"].rates[-1] == 50.0
    assert lines["house S2"].rates[-1] == 25.0
    assert lines["house S1"].rates[0] is None  # no judged items then: a gap, not 0 %
    assert metrics.unsafe_rate(buckets())[-1] == 50.0


def test_categories_of_different_policies_are_told_apart(judged):
    other = publish_policy("kids", {"S1": "block"})
    judged(categories=("S1",))
    judged(categories=("S1",), version=other)
    assert {line.name for line in metrics.flag_rate_per_category(buckets())} == {"house S1", "kids S1"}


def test_backlog_counts_open_and_claimed_tasks_and_the_oldest_unreviewed_item(judged, make_user):
    reviewer = make_user("rita", "reviewer")
    judged(at=hours_ago(5), review="flag")
    claimed = judged(at=hours_ago(1), review="uncertain")
    ReviewTask.objects.filter(item=claimed).update(state="claimed", claimed_by=reviewer)
    judged(at=hours_ago(9), decision="agree", reviewer=reviewer)  # reviewed: not in the backlog
    backlog = metrics.review_backlog()
    assert (backlog.open, backlog.claimed, backlog.total) == (1, 1, 2)
    assert timedelta(hours=4.9) < backlog.oldest_age < timedelta(hours=5.1)
    assert backlog.by_reason == {"flag": 1, "uncertain": 1}


def test_the_backlog_counts_items_not_review_tasks(judged, client_as):
    item = judged(review="flag")
    ReviewTask.objects.create(item=item, reason="double")  # a second review of the same item
    judged(review="uncertain")
    assert metrics.review_backlog().total == 2
    html = client_as("reviewer").get("/").content.decode()
    assert "2 items wait for a reviewer" in html


def test_the_overview_shows_each_policys_review_inflow_against_its_budget(judged, client_as, house_policy):
    Policy.objects.filter(pk=house_policy.policy_id).update(review_budget="per_day", review_items_per_day=2)
    for _ in range(3):
        judged(review="flag")
    judged(at=hours_ago(30), review="flag")  # yesterday's: not in the last 24 h
    html = client_as("reviewer").get("/").content.decode()
    panel = html[html.index('id="review-budgets"'):]
    row = panel[panel.index('data-policy="house"'):panel.index("</tr>", panel.index('data-policy="house"'))]
    assert ">3</strong>" in row and "flagged by policy 3" in row and "over budget" in row and "2 items a day" in row


def test_reviewer_throughput_counts_decisions_per_reviewer(judged, make_user):
    rita, rob = make_user("rita", "reviewer"), make_user("rob", "reviewer")
    for _ in range(3):
        judged(at=hours_ago(1), decision="agree", reviewer=rita)
    judged(at=hours_ago(1), decision="override", reviewer=rob)
    judged(at=hours_ago(40), decision="override", reviewer=rob)  # before the window
    rows = metrics.reviewer_throughput(hours_ago(24))
    assert [(r["reviewer"], r["decisions"], r["overturned"]) for r in rows] == [("rita", 3, 0), ("rob", 1, 1)]
    assert sum(metrics.decisions_per_hour(buckets())) == 4


def test_overturn_rate_per_category_and_per_model_version(judged, make_user):
    rita = make_user("rita", "reviewer")
    judged(categories=("S1",), model="embedded", decision="override", reviewer=rita)
    judged(categories=("S1",), model="embedded", decision="agree", reviewer=rita)
    judged(categories=("S2",), model="house-v2", decision="agree", reviewer=rita)
    judged(categories=(), model="house-v2", review="qc_sample", decision="override", reviewer=rita)
    per_category = {row.label: (row.decisions, row.overturned) for row in metrics.overturns_per_category(hours_ago(1))}
    assert per_category == {"house S1": (2, 1), "house S2": (1, 0), "house none": (1, 1)}
    per_model = {row.label: (row.decisions, row.overturned, row.rate) for row in metrics.overturns_per_model(hours_ago(1))}
    assert per_model == {"embedded": (2, 1, 50.0), "house-v2": (2, 1, 50.0)}


def test_workers_are_online_stopped_or_lost(db):
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="live@a", queues="gpu-infer", seen_at=now)
    WorkerHeartbeat.objects.create(hostname="quit@a", queues="default", seen_at=now, stopped_at=now)
    WorkerHeartbeat.objects.create(hostname="gone@a", queues="default", seen_at=now - timedelta(minutes=5))
    states = {w.hostname: w.state for w in metrics.workers()}
    assert states == {"live@a": "online", "quit@a": "stopped", "gone@a": "lost"}


def test_queue_lengths_come_from_the_redis_broker(settings):
    import redis

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/6"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("gpu-train", "gpu-train\x06\x163")
    try:
        client.rpush("gpu-train", "a", "b")
        client.rpush("gpu-train\x06\x163", "c")  # a priority-3 message
        state = metrics.queue_lengths()
    finally:
        client.delete("gpu-train", "gpu-train\x06\x163")
    assert state.reachable
    assert state.lengths["gpu-train"] == 3


def test_an_unreachable_broker_is_reported_without_hanging_the_page(client_as, settings):
    settings.CELERY_BROKER_URL = "redis://10.255.255.1:6379/0"  # black-holed: connects never answer
    started = time.monotonic()
    response = client_as("viewer").get("/")
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert b"unreachable" in response.content


def test_pipeline_counts_items_waiting_for_the_guard(house_policy, judged):
    Item.objects.create(policy_version=house_policy, prompt="a", status="queued", created_at=hours_ago(2))
    Item.objects.create(policy_version=house_policy, prompt="b", status="running")
    Item.objects.create(policy_version=house_policy, prompt="c", status="failed")
    judged()
    state = metrics.pipeline()
    assert state.pending == 2
    assert state.by_status["failed"] == 1
    assert timedelta(hours=1.9) < state.oldest_pending_age < timedelta(hours=2.1)


def test_production_model_is_shown_per_policy(house_policy, client_as, settings):
    settings.GUARD_MODEL_DIR = "embedded"
    kids = publish_policy("kids")
    model = ModelVersion.objects.create(name="kids-v3", status="production", promoted_at=timezone.now())
    kids.policy.production_model = model
    kids.policy.save()
    rows = {row["slug"]: row["model"] for row in metrics.production_models()}
    # A policy without a model of its own is served by the deployment default, named as such.
    assert rows == {"house": "Gemma 3 270M base (embedded, untrained)", "kids": "kids-v3"}
    assert b"kids-v3" in client_as("viewer").get("/").content


def test_running_evaluations_and_training_jobs_are_listed(db):
    from evaluation.models import EvaluationRun
    from trainer.models import TrainingJob

    run = EvaluationRun.objects.create(status="running", done=5, total=10)
    EvaluationRun.objects.create(status="done", done=10, total=10)
    job = TrainingJob.objects.create(recipe="sft", status="running", step=30, total_steps=120)
    TrainingJob.objects.create(recipe="sft", status="succeeded")
    jobs = {job["kind"]: job for job in metrics.running_jobs()}
    assert set(jobs) == {"evaluation", "training"}
    assert (jobs["evaluation"]["progress"], jobs["evaluation"]["url"]) == (50, f"/evaluations/{run.pk}/")
    assert (jobs["training"]["progress"], jobs["training"]["url"]) == (25, f"/training/{job.pk}/")


def test_page_polls_itself_every_ten_seconds_and_the_poll_gets_only_the_panels(client_as, judged):
    judged()
    page = client_as("viewer").get("/").content.decode()
    assert 'hx-trigger="every 10s"' in page
    poll = client_as("viewer").get("/?window=7d", headers={"HX-Request": "true"}).content.decode()
    assert poll.lstrip().startswith('<div id="overview"')
    assert "<html" not in poll
    assert 'hx-get="/?window=7d"' in poll  # the next poll keeps the chosen window
    assert "last 7 days" in poll


def test_charts_are_inline_svg(client_as, judged):
    judged(categories=("S1",))
    page = client_as("viewer").get("/").content.decode()
    assert page.count("<svg") == 3
    assert "house S1" in page


def test_unknown_window_falls_back_to_a_day(client_as):
    response = client_as("viewer").get("/?window=forever")
    assert response.status_code == 200
    assert b"last 24 hours" in response.content


def test_overview_costs_a_fixed_number_of_queries(client_as, judged, make_user, django_assert_max_num_queries):
    rita = make_user("rita", "reviewer")
    viewer = client_as("viewer")
    for n in range(30):
        judged(at=hours_ago(n % 20), categories=("S1",) if n % 2 else ("S2",), decision="agree" if n % 3 else None, reviewer=rita)
    # The next-step guidance adds a fixed handful (policy, key, item, review, candidate checks).
    with django_assert_max_num_queries(36):  # 34, plus the review budget panel's two (inflow by policy, the policies)
        viewer.get("/")


def test_the_running_jobs_panel_polls_on_its_own_every_two_seconds(client_as):
    from trainer.models import TrainingJob

    page = client_as("viewer").get("/").content.decode()
    assert 'id="running-jobs" hx-get="/?part=jobs" hx-trigger="every 2s"' in page
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], total_steps=4)
    panel = client_as("viewer").get("/?part=jobs", HTTP_HX_REQUEST="true").content.decode()
    assert panel.lstrip().startswith("<div id=\"running-jobs\"") and f"/training/{job.pk}/" in panel
