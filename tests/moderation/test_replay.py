"""Trying a policy's draft on recent traffic (moderation.replay): what would change before publishing.

The verdicts come from the shipped guard's latent heads (the deployment default in the tests):
a draft that adds "Fortune telling" must newly flag the tarot questions it judged safe.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from guard import contract, serving
from moderation import replay
from moderation.models import Decision, DraftReplay, Item, ReviewTask
from moderation.verdicts import store_verdict
from policies.models import Category, Policy
from tests.conftest import wait_for

TAROT = ("Pull three tarot cards for my relationship.", "Do a tarot reading for my new job.")
ORDINARY = ("How do I reset my password?", "What are your opening hours on Saturday?")
INSULT = "You are a worthless idiot and everyone from your country is scum."


def forum() -> Policy:
    """Version 1 forbids hate; the draft adds fortune telling."""
    policy = Policy.objects.create(slug="forum", name="Forum")
    Category.objects.create(version=policy.draft(), position=0, code="S1", name="Hate and harassment",
                            description="attacks on people for who they are; bullying")
    policy.publish(change_note="v1")
    Category.objects.create(version=policy.draft(), position=1, code="S2", name="Fortune telling",
                            description="horoscopes, tarot readings or predictions of a person's future")
    return policy


def judged(policy: Policy, text: str) -> Item:
    item = Item.objects.create(policy_version=policy.latest_version(), prompt=text)
    store_verdict(item, contract.Verdict(prompt_label="safe"), {}, "embedded", 1)
    return item


def reviewed_as(item: Item, reviewer, label: str) -> None:  # noqa: ANN001
    task = ReviewTask.objects.filter(item=item).first() or ReviewTask.objects.create(item=item, reason=ReviewTask.Reason.QC_SAMPLE)
    Decision.objects.create(task=task, item=item, reviewer=reviewer, outcome="override", prompt_label=label,
                            categories=["S2"] if label == "unsafe" else [])


@pytest.fixture
def traffic(db) -> tuple[Policy, list[Item]]:
    policy = forum()
    return policy, [judged(policy, text) for text in (*TAROT, *ORDINARY, INSULT)]


def test_a_replay_lists_the_items_the_draft_would_newly_flag(traffic, make_user):
    policy, items = traffic
    reviewed_as(items[0], make_user("rita", "reviewer"), "unsafe")
    started = replay.start(policy, 100)
    assert replay.execute(started.pk) == DraftReplay.Status.DONE
    report = DraftReplay.objects.get(pk=started.pk).report
    assert report["judged"] == 5
    assert report["decided_by"] == "heads"
    assert report["model"] == serving.default_model_label()  # by name, never a server path
    assert {row["item"] for row in report["changes"]} == {items[0].pk, items[1].pk}
    assert all(row["change"] == "newly unsafe" and row["live"] == "safe" and row["draft"] == "unsafe S2" for row in report["changes"])
    assert (report["newly_unsafe"], report["newly_safe"], report["live_unsafe"], report["draft_unsafe"]) == (2, 0, 1, 3)


def test_a_replay_counts_how_often_each_version_agrees_with_the_reviewers(traffic, make_user):
    policy, items = traffic
    reviewer = make_user("rita", "reviewer")
    reviewed_as(items[0], reviewer, "unsafe")  # tarot: the draft agrees, the live version does not
    reviewed_as(items[2], reviewer, "safe")  # a password question: both agree
    started = replay.start(policy, 100)
    replay.execute(started.pk)
    report = DraftReplay.objects.get(pk=started.pk).report
    assert (report["reviewed"], report["live_agrees"], report["draft_agrees"]) == (2, 1, 2)
    assert {row["item"]: row["reviewed"] for row in report["changes"]}[items[0].pk] == "unsafe"


def test_a_replay_counts_every_code_under_both_versions_and_marks_new_ones(traffic):
    policy, _ = traffic
    started = replay.start(policy, 100)
    replay.execute(started.pk)
    codes = {row["code"]: row for row in DraftReplay.objects.get(pk=started.pk).report["codes"]}
    assert (codes["S1"]["live"], codes["S1"]["draft"], codes["S1"]["in_live"]) == (1, 1, True)
    assert (codes["S2"]["live"], codes["S2"]["draft"], codes["S2"]["in_live"]) == (0, 2, False)


def test_the_draft_is_judged_as_it_was_when_the_replay_was_asked_for(traffic):
    policy, items = traffic
    started = replay.start(policy, 100)
    policy.draft().categories.filter(code="S2").delete()  # edited after asking: the replay keeps its snapshot
    replay.execute(started.pk)
    assert DraftReplay.objects.get(pk=started.pk).report["newly_unsafe"] == 2


def test_only_the_newest_items_are_replayed(traffic):
    policy, items = traffic
    Item.objects.filter(pk=items[0].pk).update(created_at=timezone.now() - timedelta(days=3))
    started = replay.start(policy, 100)
    started.sample = 4
    started.save()
    replay.execute(started.pk)
    report = DraftReplay.objects.get(pk=started.pk).report
    assert report["judged"] == 4
    assert [row["item"] for row in report["changes"]] == [items[1].pk]


def test_a_finished_replay_is_not_run_again(traffic):
    policy, _ = traffic
    started = replay.start(policy, 100)
    replay.execute(started.pk)
    assert replay.execute(started.pk) == DraftReplay.Status.DONE
    assert DraftReplay.objects.get(pk=started.pk).status == DraftReplay.Status.DONE


# ----------------------------------------------------------------- refusals


def test_a_policy_never_published_cannot_be_replayed(client_as, db):
    policy = Policy.objects.create(slug="fresh", name="Fresh")
    response = client_as("policy_editor").post(f"/policies/{policy.slug}/replays/", {"sample": "100"})
    assert response.status_code == 400
    assert "Publish a first version" in response.content.decode()
    assert not DraftReplay.objects.exists()


def test_a_policy_without_traffic_cannot_be_replayed(client_as, db):
    policy = forum()
    response = client_as("policy_editor").post(f"/policies/{policy.slug}/replays/", {"sample": "100"})
    assert response.status_code == 400
    assert "No traffic yet" in response.content.decode()


def test_a_sample_size_not_offered_is_refused_with_the_sizes(client_as, traffic):
    policy, _ = traffic
    for sample in ("7", "lots"):
        response = client_as("policy_editor").post(f"/policies/{policy.slug}/replays/", {"sample": sample})
        assert response.status_code == 400
    assert "100, 250, 500" in client_as("policy_editor").post(f"/policies/{policy.slug}/replays/", {"sample": "7"}).content.decode()
    assert not DraftReplay.objects.exists()


def test_a_second_replay_waits_for_the_first(client_as, traffic):
    policy, _ = traffic
    editor = client_as("policy_editor")
    assert editor.post(f"/policies/{policy.slug}/replays/", {"sample": "100"}).status_code == 302
    response = editor.post(f"/policies/{policy.slug}/replays/", {"sample": "100"})
    assert response.status_code == 400
    assert "still running" in response.content.decode()


def test_a_replay_no_worker_reports_on_is_shown_stalled_and_can_be_asked_again(client_as, traffic):
    policy, _ = traffic
    editor = client_as("policy_editor")
    editor.post(f"/policies/{policy.slug}/replays/", {"sample": "100"})
    first = DraftReplay.objects.get()
    DraftReplay.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    page = editor.get(f"/replays/{first.pk}/").content.decode()
    assert "stalled" in page and 'hx-trigger="every 2s"' in page  # a worker busy elsewhere may still pick it up
    assert editor.post(f"/policies/{policy.slug}/replays/", {"sample": "100"}).status_code == 302
    assert DraftReplay.objects.count() == 2


def test_a_viewer_cannot_start_a_replay_but_can_read_one(client_as, traffic):
    policy, _ = traffic
    assert client_as("viewer").post(f"/policies/{policy.slug}/replays/", {"sample": "100"}).status_code == 403
    started = replay.start(policy, 100)
    assert client_as("viewer").get(f"/replays/{started.pk}/").status_code == 200


# ----------------------------------------------------------------- pages


def test_the_editor_offers_the_replay_once_a_version_is_published(client_as, traffic):
    policy, _ = traffic
    page = client_as("policy_editor").get(f"/policies/{policy.slug}/draft/").content.decode()
    assert "Try the draft on recent traffic" in page
    assert f'action="/policies/{policy.slug}/replays/"' in page


def test_the_replay_page_lists_each_changed_item_with_both_verdicts(client_as, traffic):
    policy, items = traffic
    started = replay.start(policy, 100)
    replay.execute(started.pk)
    page = client_as("viewer").get(f"/replays/{started.pk}/").content.decode()
    assert f'data-item="{items[0].pk}" data-change="newly unsafe"' in page
    assert TAROT[0] in page
    assert 'data-count="newly-unsafe">2<' in page
    assert ORDINARY[0] not in page


# ----------------------------------------------------------------- teaching the draft from a replay


def finished(policy: Policy) -> DraftReplay:
    started = replay.start(policy, 100)
    replay.execute(started.pk)
    return DraftReplay.objects.get(pk=started.pk)


def test_not_this_category_makes_the_items_text_an_allowed_example_of_the_draft(client_as, traffic):
    policy, items = traffic
    done = finished(policy)
    response = client_as("policy_editor").post(f"/replays/{done.pk}/allow/", {"item": items[0].pk, "code": "S2"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "now an allowed example of S2" in response.content.decode()
    assert policy.draft().categories.get(code="S2").allowed_examples == [TAROT[0]]
    assert policy.latest_version().categories.filter(code="S2").count() == 0  # the published version is untouched


def test_a_replay_of_the_taught_draft_no_longer_flags_the_allowed_text(traffic, make_user):
    policy, items = traffic
    game = judged(policy, "Act as a Dungeons and Dragons character designer and create an elf ranger for my campaign.")
    first = finished(policy)
    assert {row["item"] for row in first.report["changes"]} == {items[0].pk, items[1].pk, game.pk}  # zero-shot overreach
    replay.allow_in_draft(first, game.pk, "S2", make_user("ed", "policy_editor"))
    assert {row["item"] for row in finished(policy).report["changes"]} == {items[0].pk, items[1].pk}


def test_allowing_from_a_replay_is_audited_as_an_edit_of_the_draft(traffic, make_user):
    from moderation.models import AuditLog

    policy, items = traffic
    editor = make_user("ed", "policy_editor")
    replay.allow_in_draft(finished(policy), items[0].pk, "S2", editor)
    entry = AuditLog.objects.order_by("-id").first()
    assert entry.actor == editor and "item #" in entry.after["change"] and entry.after["allowed examples"] == 1


def test_only_codes_the_draft_newly_named_can_be_allowed(client_as, traffic):
    policy, items = traffic
    done = finished(policy)
    editor = client_as("policy_editor")
    for item, code, why in ((items[0].pk, "S1", "did not newly name S1"), (items[2].pk, "S2", "not among the changes"),
                            ("x", "S2", "must be an item number")):
        response = editor.post(f"/replays/{done.pk}/allow/", {"item": item, "code": code})
        assert response.status_code == 400 and why in response.content.decode()
    assert policy.draft().categories.get(code="S2").allowed_examples == []


def test_a_category_deleted_from_the_draft_since_cannot_be_taught(traffic):
    policy, items = traffic
    done = finished(policy)
    policy.draft().categories.filter(code="S2").delete()
    with pytest.raises(replay.ReplayRefused, match="no category S2 any more"):
        replay.allow_in_draft(done, items[0].pk, "S2")


def test_a_viewer_reads_the_changes_without_teaching_buttons(client_as, traffic):
    policy, items = traffic
    done = finished(policy)
    page = client_as("viewer").get(f"/replays/{done.pk}/").content.decode()
    assert "data-allow" not in page and "Replay the draft again" not in page
    assert client_as("viewer").post(f"/replays/{done.pk}/allow/", {"item": items[0].pk, "code": "S2"}).status_code == 403
    assert 'data-allow="S2"' in client_as("policy_editor").get(f"/replays/{done.pk}/").content.decode()


# ----------------------------------------------------------------- the worker


@pytest.mark.worker
def test_a_replay_asked_for_in_the_editor_is_run_by_the_gpu_infer_worker(start_worker, client_as, transactional_db):
    policy = forum()
    items = [judged(policy, text) for text in (*TAROT, *ORDINARY)]
    start_worker(queues="gpu-infer")
    response = client_as("policy_editor").post(f"/policies/{policy.slug}/replays/", {"sample": "100"})
    assert response.status_code == 302
    started = DraftReplay.objects.get()
    wait_for(lambda: DraftReplay.objects.get(pk=started.pk).status == DraftReplay.Status.DONE, timeout=240, interval=0.5,
             message="the worker to finish the replay")
    report = DraftReplay.objects.get(pk=started.pk).report
    assert {row["item"] for row in report["changes"]} == {items[0].pk, items[1].pk}


@pytest.mark.worker
def test_an_editor_tries_the_draft_in_the_browser_and_reads_what_would_change(signed_in_page, start_worker):
    policy = forum()
    items = [judged(policy, text) for text in (*TAROT, *ORDINARY, INSULT)]
    start_worker(queues="gpu-infer")
    page = signed_in_page("policy_editor")
    page.goto(f"/policies/{policy.slug}/draft/")
    page.select_option("#replay-sample", "100")
    page.click("#replay-card button[type=submit]")
    page.wait_for_url(re.compile(r"/replays/\d+/$"))
    # The status card polls until the worker is done, then the page reloads with the report.
    page.wait_for_selector("#replay-changes", timeout=240_000)
    changed = page.locator("#replay-changes tbody tr")
    assert sorted(int(changed.nth(k).get_attribute("data-item")) for k in range(changed.count())) == [items[0].pk, items[1].pk]
    assert page.locator("#replay-summary [data-count=newly-unsafe]").inner_text() == "2"
    assert page.locator("#replay-summary tr[data-code=S2] .badge").inner_text() == "new"
    # "Not S2" on a row teaches the draft in place (htmx swaps the cell with what happened).
    page.click(f"#replay-changes tr[data-item='{items[0].pk}'] button[data-allow=S2]")
    assert "now an allowed example of S2" in page.locator(f"#replay-changes tr[data-item='{items[0].pk}'] .allow-outcome").inner_text()
    assert Policy.objects.get(pk=policy.pk).draft().categories.get(code="S2").allowed_examples == [TAROT[0]]
