"""Teaching a policy's categories from reviewers' decisions (trainer.teaching) and the editor's examples."""

from __future__ import annotations

import pytest

from evaluation.policy_following import load_pairs, taught
from evaluation.policy_following_teaching import TEACHING_EXAMPLES
from policies.models import Category, CategoryTeaching, Policy
from trainer.teaching import examples_from_reviews, teach


def house() -> Policy:
    policy = Policy.objects.create(slug="house", name="House rules")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="B1", name="Bullying", description="Mocks a person.")
    Category.objects.create(version=draft, position=1, code="B2", name="Spam", description="Unsolicited ads.")
    policy.publish(change_note="v1")
    return policy


def reviewed(policy: Policy, reviewer, text: str, guard_codes: list[str], reviewer_codes: list[str]) -> None:  # noqa: ANN001
    from guard import contract
    from moderation.models import Decision, Item, ReviewTask
    from moderation.verdicts import store_verdict

    item = Item.objects.create(policy_version=policy.latest_version(), prompt=text)
    store_verdict(item, contract.Verdict(prompt_label="unsafe" if guard_codes else "safe", categories=guard_codes), {}, "tiny", 1)
    task = ReviewTask.objects.filter(item=item).first() or ReviewTask.objects.create(item=item, reason=ReviewTask.Reason.FLAG)
    Decision.objects.create(task=task, item=item, reviewer=reviewer, outcome="override",
                            prompt_label="unsafe" if reviewer_codes else "safe", categories=reviewer_codes)


@pytest.mark.django_db
def test_a_code_the_reviewer_kept_makes_a_violating_example(make_user):
    policy = house()
    reviewed(policy, make_user("rev", "reviewer"), "Buy cheap pills at example.com!", ["B2"], ["B2"])
    examples, count = examples_from_reviews(policy)
    assert count == 1 and examples == {"B2": {"violating": ["Buy cheap pills at example.com!"], "allowed": []}}


@pytest.mark.django_db
def test_a_code_the_reviewer_removed_makes_a_near_miss(make_user):
    policy = house()
    reviewed(policy, make_user("rev", "reviewer"), "Our bake sale is on Friday, come along!", ["B2"], [])
    examples, _ = examples_from_reviews(policy)
    assert examples == {"B2": {"violating": [], "allowed": ["Our bake sale is on Friday, come along!"]}}


@pytest.mark.django_db
def test_teaching_snapshots_are_numbered_and_travel_with_every_versions_spec(make_user):
    policy = house()
    reviewer = make_user("rev", "reviewer")
    reviewed(policy, reviewer, "You are a pathetic loser.", ["B2"], ["B1"])
    first = teach(policy)
    reviewed(policy, reviewer, "Nobody likes you, idiot.", ["B1"], ["B1"])
    second = teach(policy)
    assert (first.number, second.number) == (1, 2)
    spec = policy.latest_version().to_spec()
    bullying = spec.category("B1")
    assert set(bullying.taught_violating) == {"You are a pathetic loser.", "Nobody likes you, idiot."}
    assert spec.category("B2").taught_allowed == ("You are a pathetic loser.",)
    assert bullying.violating_examples == ()  # taught examples never become editor examples


@pytest.mark.django_db
def test_taught_examples_are_never_rendered_into_the_models_input(make_user):
    from guard.contract import render_policy

    policy = house()
    reviewed(policy, make_user("rev", "reviewer"), "You are a pathetic loser.", [], ["B1"])
    before = render_policy(policy.latest_version().to_spec())
    teach(policy)
    assert render_policy(policy.latest_version().to_spec()) == before


@pytest.mark.django_db
def test_refit_from_reviews_is_a_post_by_a_policy_editor_and_shows_the_snapshot(client_as, make_user, tiny_model, settings):
    settings.GUARD_MODEL_DIR = str(tiny_model)
    policy = house()
    reviewed(policy, make_user("rev", "reviewer"), "Buy cheap pills at example.com!", ["B2"], ["B2"])
    assert client_as("reviewer").post("/training/teach/house/").status_code == 403
    response = client_as("policy_editor").post("/training/teach/house/", follow=True)
    assert response.status_code == 200
    assert CategoryTeaching.objects.filter(policy=policy).count() == 1
    assert b"Teaching #1" in response.content and b"teaching-scores" in response.content


@pytest.mark.django_db
def test_an_unknown_policy_is_a_404(client_as):
    assert client_as("policy_editor").get("/training/teach/nope/").status_code == 404


def test_no_teaching_example_is_an_evaluation_text():
    evaluation_texts = {pair["text"].casefold() for pair in load_pairs()}
    examples = [text.casefold() for texts in TEACHING_EXAMPLES.values() for text in texts]
    assert len(examples) == 8 * 12 and not evaluation_texts & set(examples)


def test_the_taught_pairs_put_the_examples_on_the_covering_category_only():
    pair = taught(load_pairs())[0]
    covering = {c["code"]: c for c in pair["covering_policy"]["categories"]}
    assert len(covering[pair["code"]]["violating_examples"]) == 8
    assert all(not c["violating_examples"] for code, c in covering.items() if code != pair["code"])
    assert all(not c["violating_examples"] for c in pair["other_policy"]["categories"])
