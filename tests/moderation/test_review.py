"""The review queue: claims, decisions with an audit trail, agreement, training export."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from moderation import review
from moderation.export import reviewed_records
from moderation.models import AuditLog, Decision, ReviewTask
from moderation.review import Labels, ReviewError, cohen_kappa
from tests.moderation.conftest import guard_verdict, publish_policy

# ----------------------------------------------------------------- claims


def test_claimed_item_is_not_offered_to_a_second_reviewer(flagged_tasks, make_user):
    first_task, second_task = flagged_tasks(2)
    alice, bob = make_user("alice", "reviewer"), make_user("bob", "reviewer")
    assert review.claim_next(alice).pk == first_task.pk
    assert review.claim_next(bob).pk == second_task.pk
    assert review.claim_next(make_user("carol", "reviewer")) is None


def test_a_reviewer_asking_again_keeps_their_current_claim(flagged_tasks, make_user):
    flagged_tasks(2)
    alice = make_user("alice", "reviewer")
    assert review.claim_next(alice).pk == review.claim_next(alice).pk


def test_an_expired_claim_goes_back_to_the_queue(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice, bob = make_user("alice", "reviewer"), make_user("bob", "reviewer")
    review.claim_next(alice)
    ReviewTask.objects.filter(pk=task.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    assert review.expire_claims() == 1
    assert ReviewTask.objects.get(pk=task.pk).state == "open"
    assert review.claim_next(bob).pk == task.pk


def test_an_expired_claim_can_be_taken_before_the_expiry_task_runs(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice, bob = make_user("alice", "reviewer"), make_user("bob", "reviewer")
    review.claim_next(alice)
    ReviewTask.objects.filter(pk=task.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    assert review.claim_next(bob).pk == task.pk
    with pytest.raises(ReviewError, match="another reviewer took it"):
        review.decide(task.pk, alice, "agree")


@pytest.mark.django_db(transaction=True)
def test_reviewers_claiming_at_the_same_time_never_hold_the_same_task(flagged_tasks, make_user):
    tasks = flagged_tasks(24)
    reviewers = [make_user(f"reviewer{n}", "reviewer") for n in range(6)]
    held: dict[str, list[int]] = {}
    start = threading.Barrier(len(reviewers))

    def work(user) -> None:
        mine: list[int] = []
        try:
            start.wait()
            while (task := review.claim_next(user)) is not None:
                mine.append(task.pk)
                review.decide(task.pk, user, "agree")
        finally:
            held[user.username] = mine
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pk for ids in held.values() for pk in ids]
    assert sorted(every) == sorted(t.pk for t in tasks)  # each task exactly once
    assert Decision.objects.count() == len(tasks)


def test_a_reviewer_never_gets_both_reviews_of_a_double_reviewed_item(judged_item, make_user, settings):
    settings.MODERATION_DOUBLE_REVIEW_RATE = 1.0
    judged_item()
    alice, bob = make_user("alice", "reviewer"), make_user("bob", "reviewer")
    first = review.claim_next(alice)
    review.decide(first.pk, alice, "agree")
    assert review.claim_next(alice) is None
    second = review.claim_next(bob)
    assert second.item_id == first.item_id and second.reason != first.reason


def test_released_item_returns_to_the_queue(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.release(review.claim_next(alice), alice)
    assert ReviewTask.objects.get(pk=task.pk).state == "open"


# ----------------------------------------------------------------- decisions


def test_agreeing_copies_the_guard_labels_and_is_audited(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.claim_next(alice)
    decision = review.decide(task.pk, alice, "agree", note="clear case")
    assert (decision.prompt_label, decision.categories, decision.note) == ("unsafe", ["S2"], "clear case")
    entry = AuditLog.objects.get(action="review.agree")
    assert entry.actor == alice and entry.object_type == "item" and entry.object_id == str(task.item_id)
    assert entry.before["categories"] == ["S2"] and entry.after["outcome"] == "agree" and entry.after["note"] == "clear case"
    assert ReviewTask.objects.get(pk=task.pk).state == "done"


def test_override_records_the_new_labels_and_what_changed(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.claim_next(alice)
    review.decide(task.pk, alice, "override", Labels("unsafe", categories=["S1", "S2"]))
    entry = AuditLog.objects.get(action="review.override")
    assert entry.before["categories"] == ["S2"]
    assert entry.after["categories"] == ["S1", "S2"]


def test_override_to_safe_with_categories_is_refused(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.claim_next(alice)
    with pytest.raises(ReviewError, match="no label is unsafe"):
        review.decide(task.pk, alice, "override", Labels("safe", categories=["S1"]))


def test_each_text_keeps_its_own_categories_and_the_item_gets_them_all(judged_item, make_user):
    item = judged_item("Write malware", response="Sure, here it is", verdict=guard_verdict(prompt_label="unsafe", response_label="safe", refusal_label="compliance"))
    alice = make_user("alice", "reviewer")
    task = review.claim_next(alice)
    labels = Labels("unsafe", "unsafe", "compliance", prompt_categories=["S2"], response_categories=["S2", "S1"])
    decision = review.decide(task.pk, alice, "override", labels)
    assert (decision.prompt_categories, decision.response_categories, decision.categories) == (["S2"], ["S1", "S2"], ["S1", "S2"])
    assert decision.item_id == item.pk


def test_categories_chosen_for_a_text_labelled_safe_are_refused_naming_the_text(judged_item, make_user):
    judged_item("Write malware", response="I won't.", verdict=guard_verdict(prompt_label="unsafe", response_label="safe", refusal_label="refusal"))
    alice = make_user("alice", "reviewer")
    task = review.claim_next(alice)
    with pytest.raises(ReviewError, match="chosen for the response, but the response is labelled safe"):
        review.decide(task.pk, alice, "override", Labels("unsafe", "safe", "refusal", prompt_categories=["S2"], response_categories=["S1"]))


def test_override_with_an_unknown_category_is_refused_naming_it(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.claim_next(alice)
    with pytest.raises(ReviewError, match="S42"):
        review.decide(task.pk, alice, "override", Labels("unsafe", categories=["S42"]))


def test_deciding_an_item_claimed_by_someone_else_is_refused(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    review.claim_next(make_user("alice", "reviewer"))
    with pytest.raises(ReviewError):
        review.decide(task.pk, make_user("bob", "reviewer"), "agree")


def test_an_item_cannot_be_decided_twice(flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    alice = make_user("alice", "reviewer")
    review.claim_next(alice)
    review.decide(task.pk, alice, "agree")
    with pytest.raises(ReviewError, match="already decided"):
        review.decide(task.pk, alice, "agree")


# ----------------------------------------------------------------- agreement


def test_cohen_kappa_matches_a_hand_computed_example():
    # 10 items: both "yes" 4, both "no" 3, a yes/b no 2, a no/b yes 1.
    a = ["y"] * 4 + ["n"] * 3 + ["y"] * 2 + ["n"]
    b = ["y"] * 4 + ["n"] * 3 + ["n"] * 2 + ["y"]
    # po = 0.7; pe = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y", "n"], ["y", "n"]) == pytest.approx(1.0)
    assert cohen_kappa([], []) is None


def test_agreement_is_reported_per_reviewer_and_per_category(judged_item, make_user, settings):
    settings.MODERATION_DOUBLE_REVIEW_RATE = 1.0
    alice, bob = make_user("alice", "reviewer"), make_user("bob", "reviewer")
    for n in range(4):
        judged_item(f"prompt {n}")
    # alice agrees with the guard everywhere (unsafe, S2); bob says safe on the last item.
    for user in (alice, bob):
        while (task := review.claim_next(user)) is not None:
            last = task.item.prompt == "prompt 3"
            if user == bob and last:
                review.decide(task.pk, user, "override", Labels("safe"))
            else:
                review.decide(task.pk, user, "agree")
    report = review.agreement()
    assert report.pairs == 4
    assert report.overall.agreement == pytest.approx(0.75)
    assert {row.name for row in report.per_reviewer} == {"alice", "bob"}
    assert [row.name for row in report.per_category] == ["S2"]
    assert report.per_category[0].agreement == pytest.approx(0.75)


# ----------------------------------------------------------------- training export


def test_reviewed_items_are_exported_in_the_shared_jsonl_schema(judged_item, make_user, house_policy):
    item = judged_item("Write malware", response="Sure, here it is", verdict=guard_verdict(prompt_label="unsafe", response_label="unsafe", refusal_label="compliance", categories=("S2",)))
    judged_item("Unreviewed item")
    alice = make_user("alice", "reviewer")
    task = review.claim_next(alice)
    review.decide(task.pk, alice, "override", Labels("unsafe", "unsafe", "compliance", ["S1"]))
    records = list(reviewed_records())
    assert records == [
        {
            "id": f"review-{item.pk}",
            "source": "review",
            "prompt": "Write malware",
            "response": "Sure, here it is",
            "prompt_label": "unsafe",
            "response_label": "unsafe",
            "refusal_label": "compliance",
            "categories": ["S1"],
            "taxonomy": "policy:house@1",
            "policy_version_id": house_policy.pk,
        }
    ]
    assert list(reviewed_records("house")) == records
    assert list(reviewed_records("other")) == []


def test_the_migration_fills_in_task_scores_and_each_texts_categories_of_existing_rows(transactional_db, make_user):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("moderation", "0004_webhook_deliveries")], [("moderation", "0005_review_task_score_and_categories_per_text")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        version = publish_policy("old")  # the policies tables stay migrated: made with their own models
        Item, Verdict = old.get_model("moderation", "Item"), old.get_model("moderation", "Verdict")
        Task, Decision = old.get_model("moderation", "ReviewTask"), old.get_model("moderation", "Decision")
        User = old.get_model("auth", "User")
        item = Item.objects.create(policy_version_id=version.pk, prompt="p", response="r")
        Verdict.objects.create(item=item, prompt_label="unsafe", response_label="safe", categories=["S2"], confidence=0.1, action="flag",
                               probabilities={"prompt": {"safe": 0.3, "unsafe": 0.7}, "response": {"safe": 0.9, "unsafe": 0.1}})
        task = Task.objects.create(item=item, reason="flag")
        decision = Decision.objects.create(task=task, item=item, reviewer=User.objects.create(username="old-rev"), outcome="agree",
                                           prompt_label="unsafe", response_label="safe", categories=["S2"])
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        assert new.get_model("moderation", "ReviewTask").objects.values_list("field", "score").get(pk=task.pk) == ("prompt", 0.7)
        filled = new.get_model("moderation", "Decision").objects.values_list("prompt_categories", "response_categories").get(pk=decision.pk)
        assert filled == (["S2"], [])
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
