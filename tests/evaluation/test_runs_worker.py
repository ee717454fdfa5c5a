"""Evaluation runs end to end: started from the web, executed by a real gpu-infer worker."""

from __future__ import annotations

import pytest

from evaluation.models import EvaluationRun
from tests.conftest import wait_for


@pytest.fixture
def shared_datasets(settings, small_benchmark):
    settings.SHARED_DATASETS_DIR = small_benchmark
    return small_benchmark


@pytest.fixture
def infer_worker(start_worker, tiny_model):
    # The deployment's default model is the tiny one: runs started with "default model" use it.
    return start_worker(queues="gpu-infer", extra_env={"GUARD_MODEL_DIR": tiny_model})


def finished(pk: int) -> EvaluationRun | None:
    run = EvaluationRun.objects.get(pk=pk)
    return run if run.status in (EvaluationRun.Status.DONE, EvaluationRun.Status.FAILED) else None


@pytest.mark.worker
def test_runs_started_from_the_web_are_evaluated_by_the_worker_and_compared(client_as, shared_datasets, infer_worker):
    client = client_as("policy_editor")
    form = {"data": ["prompts.jsonl", "responses.jsonl"], "model": "", "policy": "auto", "limit": 1, "batch_size": 2}
    client.post("/evaluations/start/", {**form, "mode": "fast", "policy_following": "on"})
    client.post("/evaluations/start/", {**form, "mode": "reason"})
    fast, reason = EvaluationRun.objects.order_by("pk")
    for run in (fast, reason):
        done = wait_for(lambda run=run: finished(run.pk), timeout=240, interval=1, message=f"run {run.pk}")
        assert done.status == EvaluationRun.Status.DONE, done.error + infer_worker.output()[-3000:]
        assert done.report["n"] == 2 and done.report["mode"] == run.mode
        assert done.done == done.total == 2 and done.attempts == 1
        assert done.started_at and done.finished_at
    # The fast run also judged every policy-following pair under both of its policies; the reason run was not asked to.
    following = EvaluationRun.objects.get(pk=fast.pk).report["policy_following"]
    assert following["n"] == 72 and 0.0 <= following["pair_accuracy"] <= 100.0
    assert all(miss["id"].startswith("pf-") and miss["covering"] and miss["other"] for miss in following["misses"])
    assert "policy_following" not in EvaluationRun.objects.get(pk=reason.pk).report
    listing = client.get("/evaluations/").content.decode()
    assert listing.count('data-status="done"') == 2 and "every 2s" not in listing
    compare = client.get(f"/evaluations/compare/?a={fast.pk}&b={reason.pk}")
    assert compare.status_code == 200
    html = compare.content.decode()
    assert "(fast)" in html and "(reason)" in html and "prompts.jsonl" in html and "<svg" in html


@pytest.mark.worker
def test_a_run_whose_model_cannot_be_loaded_fails_with_the_reason(client_as, shared_datasets, infer_worker, tmp_path):
    from guard.models import ModelVersion

    ModelVersion.objects.create(name="broken", base_model_path="embedded", adapter_path=str(tmp_path / "gone"))
    client_as("admin").post("/evaluations/start/", {
        "data": ["prompts.jsonl"], "model": "broken", "mode": "fast", "policy": "auto", "limit": 1, "batch_size": 2,
    })
    run = wait_for(lambda: finished(EvaluationRun.objects.get().pk), timeout=120, interval=1, message="failed run")
    assert run.status == EvaluationRun.Status.FAILED
    assert "GuardError" in run.error and "broken" in run.error
    assert "adapter" in client_as("viewer").get(f"/evaluations/{run.pk}/").content.decode()


@pytest.mark.browser
@pytest.mark.worker
def test_a_policy_editor_starts_a_run_in_the_browser_and_watches_it_finish(signed_in_page, shared_datasets, infer_worker):
    page = signed_in_page("policy_editor")
    page.goto("/evaluations/")
    page.check("input[name=data][value='responses.jsonl']")
    page.fill("input[name=limit]", "2")
    page.fill("input[name=batch_size]", "2")
    page.click("text=Start evaluation")
    page.wait_for_url("**/evaluations/*/")
    # htmx polls the status card and reloads the page once the run is done.
    page.wait_for_selector("#run-status[data-status=done]", timeout=180_000)
    page.wait_for_selector("table.eval-tasks")
    assert page.locator("svg.bar-chart").count() >= 1
    assert "responses.jsonl" in page.inner_text("table.eval-files")
    # The form judges the policy-following pairs unless unticked: the page gives their score.
    assert "pairs right" in page.inner_text("#policy-following")


@pytest.mark.worker
def test_a_run_whose_worker_is_killed_is_requeued_and_finished_by_another_worker(client_as, shared_datasets, start_worker, tiny_model, settings):
    from evaluation.tasks import requeue_stale_runs

    settings.EVALUATION_STALE_SECONDS = 6
    env = {"GUARD_MODEL_DIR": tiny_model}
    first = start_worker(queues="gpu-infer", extra_env=env)
    client_as("policy_editor").post("/evaluations/start/", {
        "data": ["prompts.jsonl", "responses.jsonl"], "model": "", "mode": "reason", "policy": "auto", "batch_size": 1,
    })
    pk = EvaluationRun.objects.get().pk
    wait_for(lambda: EvaluationRun.objects.filter(pk=pk, status="running", done__gte=1, done__lt=7).exists(),
             timeout=180, interval=0.05, message="the run half-way")
    first.kill_hard()
    assert EvaluationRun.objects.get(pk=pk).status == EvaluationRun.Status.RUNNING

    wait_for(lambda: requeue_stale_runs()["requeued"], timeout=60, interval=1, message="the sweeper to re-queue the run")
    start_worker(queues="gpu-infer", extra_env=env)
    run = wait_for(lambda: finished(pk), timeout=240, interval=1, message="the re-queued run to finish")
    assert run.status == EvaluationRun.Status.DONE, run.error
    assert run.attempts == 2 and run.report["n"] == 7


def test_the_sweeper_gives_up_on_a_run_whose_worker_keeps_dying(db):
    from datetime import timedelta

    from django.utils import timezone

    from evaluation.tasks import MAX_ATTEMPTS, requeue_stale_runs

    old = timezone.now() - timedelta(hours=1)
    lost = EvaluationRun.objects.create(status=EvaluationRun.Status.RUNNING, attempts=MAX_ATTEMPTS, heartbeat_at=old)
    alive = EvaluationRun.objects.create(status=EvaluationRun.Status.RUNNING, attempts=1, heartbeat_at=timezone.now())
    assert requeue_stale_runs() == {"requeued": 0, "failed": 1}
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == EvaluationRun.Status.FAILED and "lost 3 times" in lost.error
    assert alive.status == EvaluationRun.Status.RUNNING
