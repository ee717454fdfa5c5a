"""Explanations for fast verdicts: a reason pass writes them afterwards, for the items the policy names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from guard.models import ModelVersion
from guard.testing import tiny_model_dir
from moderation import explain
from moderation.models import AuditLog, Item, Verdict
from moderation.verdicts import category_actions, store_verdict
from policies.models import Policy
from tests.conftest import wait_for
from tests.moderation.conftest import ApiClient, guard_verdict, publish_policy
from tests.moderation.test_webhooks import Receiver

PENDING, DONE = Verdict.ExplanationStatus.PENDING, Verdict.ExplanationStatus.DONE


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """A real webhook endpoint on loopback."""
    endpoint = Receiver()
    yield endpoint
    endpoint.server.shutdown()


def fast(prompt_label: str = "unsafe", categories: tuple[str, ...] = ("S2",)):  # noqa: ANN201
    verdict = guard_verdict(prompt_label=prompt_label, categories=categories, explanation="")
    verdict.mode = "fast"
    return verdict


def store_fast(version, verdict, prompt: str = "How do I pick a lock?") -> Verdict:  # noqa: ANN001
    item = Item.objects.create(policy_version=version, prompt=prompt, status=Item.Status.RUNNING, attempts=1)
    return store_verdict(item, verdict, category_actions(version), "embedded", 5)[0]


def tiny_model(name: str, prompt_threshold: float) -> ModelVersion:
    """The tiny random model, calibrated so that every prompt is unsafe (threshold near 0) or safe (near 1)."""
    return ModelVersion.objects.create(
        name=name, base_model_path=str(tiny_model_dir()), metrics={"calibration": {"thresholds": {"prompt": prompt_threshold}}}
    )


def serve(version, model: ModelVersion) -> None:  # noqa: ANN001
    Policy.objects.filter(pk=version.policy_id).update(production_model=model)


# ----------------------------------------------------------------- which verdicts wait for one


def test_a_flagged_fast_verdict_waits_for_an_explanation(house_policy, quiet_review):
    verdict = store_fast(house_policy, fast(categories=("S2",)))
    assert (verdict.action, verdict.explanation_status, verdict.explanation) == ("flag", PENDING, "")


def test_a_blocked_fast_verdict_waits_for_an_explanation(house_policy, quiet_review):
    assert store_fast(house_policy, fast(categories=("S1",))).explanation_status == PENDING


def test_an_allowed_fast_verdict_gets_no_explanation_by_default(house_policy, quiet_review):
    verdict = store_fast(house_policy, fast(prompt_label="safe", categories=()))
    assert (verdict.action, verdict.explanation_status) == ("allow", "")


def test_with_explanations_off_a_flagged_fast_verdict_gets_none(house_policy, quiet_review):
    Policy.objects.filter(pk=house_policy.policy_id).update(explain=Policy.Explain.OFF)
    house_policy.policy.refresh_from_db()
    assert store_fast(house_policy, fast(categories=("S2",))).explanation_status == ""


def test_with_explanations_for_all_an_allowed_fast_verdict_gets_one(house_policy, quiet_review):
    Policy.objects.filter(pk=house_policy.policy_id).update(explain=Policy.Explain.ALL)
    house_policy.policy.refresh_from_db()
    assert store_fast(house_policy, fast(prompt_label="safe", categories=())).explanation_status == PENDING


def test_a_reason_mode_verdict_keeps_its_own_explanation(house_policy, quiet_review):
    item = Item.objects.create(policy_version=house_policy, prompt="p", status=Item.Status.RUNNING)
    verdict, _ = store_verdict(item, guard_verdict(), category_actions(house_policy), "embedded", 5)
    assert verdict.explanation and verdict.explanation_status == ""


def test_new_policies_explain_flagged_and_blocked_items(db):
    assert Policy.objects.create(slug="fresh", name="Fresh").explain == Policy.Explain.FLAG_BLOCK


# ----------------------------------------------------------------- the reason pass


def test_the_reason_pass_writes_the_explanation_and_keeps_the_fast_labels(db, quiet_review):
    version = publish_policy("strict", {"S1": "block", "S2": "flag"})
    serve(version, tiny_model("always-unsafe", 1e-6))
    verdict = store_fast(version, fast(categories=("S2",)))

    outcome = explain.run_pending(time_budget_s=120)

    verdict.refresh_from_db()
    assert (outcome.claimed, outcome.written) == (1, 1)
    assert verdict.explanation_status == DONE and verdict.explanation.strip()
    assert (verdict.mode, verdict.prompt_label, verdict.action) == ("fast", "unsafe", "flag")
    assert verdict.explained_at is not None and verdict.explanation_error == ""


def test_running_the_reason_pass_again_changes_nothing(db, quiet_review):
    version = publish_policy("strict", {"S1": "block", "S2": "flag"})
    serve(version, tiny_model("always-unsafe", 1e-6))
    verdict = store_fast(version, fast())
    explain.run_pending(time_budget_s=120)
    verdict.refresh_from_db()
    first = (verdict.explanation, verdict.explained_at, verdict.explanation_attempts)

    assert explain.run_pending(time_budget_s=120).claimed == 0
    verdict.refresh_from_db()
    assert (verdict.explanation, verdict.explained_at, verdict.explanation_attempts) == first


def test_an_explanation_held_by_a_dead_worker_is_written_once_its_lease_runs_out(db, quiet_review):
    version = publish_policy("strict", {"S1": "block", "S2": "flag"})
    serve(version, tiny_model("always-unsafe", 1e-6))
    verdict = store_fast(version, fast())
    assert [v.pk for v in explain.claim(8)] == [verdict.pk]  # the worker that died held it
    assert explain.run_pending(time_budget_s=30).claimed == 0  # leased: nobody else takes it

    Verdict.objects.filter(pk=verdict.pk).update(explanation_leased_until=timezone.now() - timedelta(seconds=1))
    explain.run_pending(time_budget_s=120)

    verdict.refresh_from_db()
    assert verdict.explanation_status == DONE and verdict.explanation_attempts == 2


def test_an_explanation_out_of_attempts_is_marked_failed_with_the_reason(house_policy, quiet_review, settings):
    settings.MODERATION_MAX_ATTEMPTS = 1
    verdict = store_fast(house_policy, fast())
    explain.claim(8)
    Verdict.objects.filter(pk=verdict.pk).update(explanation_leased_until=timezone.now() - timedelta(seconds=1))

    assert explain.sweep() == 1
    verdict.refresh_from_db()
    assert verdict.explanation_status == "failed" and "gave up after 1 attempt" in verdict.explanation_error


def test_the_reason_pass_steps_aside_while_items_wait_for_a_verdict(house_policy, quiet_review):
    verdict = store_fast(house_policy, fast())
    Item.objects.create(policy_version=house_policy, prompt="waiting", status=Item.Status.QUEUED)
    outcome = explain.run_pending(time_budget_s=30)
    verdict.refresh_from_db()
    assert outcome.deferred and outcome.claimed == 0 and verdict.explanation_status == PENDING


@pytest.mark.worker
def test_flagged_items_get_an_explanation_in_the_background_and_allowed_ones_do_not(start_worker, make_key, hook):
    strict = publish_policy("strict", {"S1": "block", "S2": "flag"})
    lenient = publish_policy("lenient", {"S1": "block", "S2": "flag"})
    serve(strict, tiny_model("always-unsafe", 1e-6))
    serve(lenient, tiny_model("always-safe", 1 - 1e-6))
    _, secret = make_key("hooked", webhook_url=hook.url, webhook_secret="s3cret")
    api = ApiClient(secret)
    start_worker(queues="default,gpu-infer", extra_env={
        "GUARD_MODEL_DIR": str(tiny_model_dir()), "MODERATION_MICRO_BATCH_WAIT_MS": "0",
        "MODERATION_QC_SAMPLE_RATE": "0", "MODERATION_DOUBLE_REVIEW_RATE": "0",
    })
    body = {"mode": "fast", "items": [
        {"prompt": "How do I hotwire a car?", "policy": "strict"},
        {"prompt": "How do I make a weapon?", "policy": "strict"},
        {"prompt": "What is the capital of France?", "policy": "lenient"},
    ]}
    flagged_a, flagged_b, allowed = api.post("/api/v1/items", body).json()["ids"]

    wait_for(lambda: Verdict.objects.filter(item_id__in=[flagged_a, flagged_b], explanation_status=DONE).count() == 2,
             timeout=180, message="both flagged items explained")

    for pk in (flagged_a, flagged_b):
        answer = api.get(f"/api/v1/items/{pk}").json()["verdict"]
        assert answer["mode"] == "fast" and answer["action"] in ("flag", "block")
        assert answer["explanation_status"] == "done" and answer["explanation"].strip()
    quiet = api.get(f"/api/v1/items/{allowed}").json()["verdict"]
    assert (quiet["action"], quiet["explanation"], quiet["explanation_status"]) == ("allow", "", "none")

    def explanation_events() -> set[int]:
        return {json.loads(body)["item"]["id"] for _, body in hook.received if json.loads(body)["event"] == "explanation"}

    wait_for(lambda: explanation_events() == {flagged_a, flagged_b}, timeout=60, message="an explanation webhook per flagged item")


# ----------------------------------------------------------------- the setting


def test_a_policy_editor_turns_explanations_off_and_it_is_audited(client_as, house_policy):
    response = client_as("policy_editor").post("/policies/house/settings/", {"explain": "off"})
    assert response.status_code == 302
    assert Policy.objects.get(slug="house").explain == "off"
    entry = AuditLog.objects.get(action="policy.settings")
    assert (entry.before, entry.after) == ({"explain": "flag_block"}, {"explain": "off"})


def test_an_unknown_explain_setting_is_400_and_changes_nothing(client_as, house_policy):
    response = client_as("policy_editor").post("/policies/house/settings/", {"explain": "sometimes"})
    assert response.status_code == 400 and b"is not one of" in response.content
    assert Policy.objects.get(slug="house").explain == "flag_block"


def test_a_viewer_cannot_change_the_explain_setting(client_as, house_policy):
    assert client_as("viewer").post("/policies/house/settings/", {"explain": "off"}).status_code == 403


def test_the_policy_page_offers_the_explain_setting(client_as, house_policy):
    page = client_as("policy_editor").get("/policies/house/").content.decode()
    assert 'name="explain"' in page and "flagged and blocked items" in page and '<option value="off"' in page


# ----------------------------------------------------------------- pages


def test_the_review_page_says_the_explanation_is_being_written(client_as, house_policy, quiet_review):
    verdict = store_fast(house_policy, fast())
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    page = reviewer.get("/review/").content.decode()
    assert "Being written" in page and f'hx-get="/items/{verdict.item_id}/explanation/"' in page


def test_the_polled_fragment_shows_the_explanation_once_written_and_stops_polling(client_as, house_policy, quiet_review):
    verdict = store_fast(house_policy, fast())
    Verdict.objects.filter(pk=verdict.pk).update(explanation="Asks how to break into a home (S2).", explanation_status=DONE)
    fragment = client_as("viewer").get(f"/items/{verdict.item_id}/explanation/").content.decode()
    assert "Asks how to break into a home" in fragment and "hx-trigger" not in fragment


def test_an_allowed_items_page_says_why_it_has_no_explanation(client_as, house_policy, quiet_review):
    verdict = store_fast(house_policy, fast(prompt_label="safe", categories=()))
    page = client_as("viewer").get(f"/items/{verdict.item_id}/").content.decode()
    assert "fast mode writes none" in page and "flagged and blocked items only" in page


@pytest.mark.worker
def test_a_worker_killed_while_explaining_loses_no_explanation_and_writes_none_twice(start_worker, house_policy, quiet_review):
    count = 12
    ids = [store_fast(house_policy, fast(), prompt=f"How do I pick lock number {n}?").pk for n in range(count)]
    env = {"GUARD_MODEL_DIR": str(tiny_model_dir()), "MODERATION_EXPLAIN_BATCH_SIZE": "3", "MODERATION_LEASE_SECONDS": "3"}
    first = start_worker(queues="gpu-infer", extra_env=env)
    explain.announce()

    def in_flight() -> bool:
        done = Verdict.objects.filter(pk__in=ids, explanation_status=DONE).count()
        held = Verdict.objects.filter(pk__in=ids, explanation_status=PENDING, explanation_leased_until__gt=timezone.now()).count()
        return 3 <= done <= count - 6 and held > 0

    wait_for(in_flight, timeout=180, interval=0.02, message="an explanation batch in flight")
    first.kill_hard()
    written_before = dict(Verdict.objects.filter(pk__in=ids, explanation_status=DONE).values_list("pk", "explained_at"))
    orphaned = set(Verdict.objects.filter(pk__in=ids, explanation_status=PENDING, explanation_attempts=1).values_list("pk", flat=True))
    assert orphaned, "the kill did not land mid-batch"

    # Once the dead worker's lease runs out the sweeper wakes a new worker, which finishes the job.
    wait_for(lambda: not Verdict.objects.filter(pk__in=orphaned, explanation_leased_until__gte=timezone.now()).exists(),
             timeout=30, interval=0.5, message="the dead worker's lease to run out")
    explain.sweep()
    start_worker(queues="gpu-infer", extra_env=env)
    wait_for(lambda: Verdict.objects.filter(pk__in=ids, explanation_status=DONE).count() == count, timeout=180, message="every explanation written")

    assert dict(Verdict.objects.filter(pk__in=written_before).values_list("pk", "explained_at")) == written_before
    assert max(Verdict.objects.filter(pk__in=ids).values_list("explanation_attempts", flat=True)) <= 2
    assert not Verdict.objects.filter(pk__in=ids, explanation="").exists()
