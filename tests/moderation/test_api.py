"""The moderation API: every error case answers 4xx JSON naming the problem; idempotency; polling."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from moderation import dispatch, keys
from moderation.models import ApiKey, IdempotencyRecord, Item, Verdict
from tests.moderation.conftest import ApiClient, publish_policy

ITEMS = "/api/v1/items"
MODERATE = "/api/v1/moderate"


def batch(*prompts: str, policy: str = "house", **extra: object) -> dict:
    return {"policy": policy, "items": [{"prompt": p, "external_id": f"ext-{n}"} for n, p in enumerate(prompts)], **extra}


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["detail"], body
    return body


# ----------------------------------------------------------------- documentation


def test_openapi_document_is_served_without_a_key(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert {"/api/v1/moderate", "/api/v1/items", "/api/v1/items/{item_id}"} <= set(document["paths"])
    assert set(document["paths"]["/api/v1/items"]) == {"get", "post"}
    schemes = document["components"]["securitySchemes"]
    assert {"BearerKey", "HeaderKey"} <= set(schemes)


# ----------------------------------------------------------------- authentication and rate limit


def test_request_without_a_key_is_401_saying_how_to_send_one(client, house_policy):
    response = client.post(ITEMS, data=batch("hi"), content_type="application/json")
    assert_error(response, 401, "missing_api_key", "Authorization: Bearer")


def test_unknown_key_is_401(house_policy):
    assert_error(ApiClient("gsk_deadbeef_not-a-real-secret").post(ITEMS, batch("hi")), 401, "invalid_api_key")


def test_malformed_key_is_401_naming_the_expected_shape(house_policy):
    assert_error(ApiClient("hunter2").post(ITEMS, batch("hi")), 401, "invalid_api_key", "gsk_<prefix>_<secret>")


def test_right_prefix_with_wrong_secret_is_401(make_key, house_policy):
    key, secret = make_key()
    assert_error(ApiClient(secret[:-3] + "xyz").post(ITEMS, batch("hi")), 401, "invalid_api_key")


def test_revoked_key_is_401_revoked(make_key, house_policy):
    key, secret = make_key()
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert_error(ApiClient(secret).post(ITEMS, batch("hi")), 401, "revoked_api_key", key.prefix)


def test_x_api_key_header_authenticates(make_key, house_policy):
    _, secret = make_key()
    assert ApiClient(secret, header="x-api-key").post(ITEMS, batch("hi")).status_code == 202


def test_only_the_hash_of_a_key_is_stored(make_key):
    key, secret = make_key()
    assert secret not in str(ApiKey.objects.filter(pk=key.pk).values().get())
    assert key.key_hash == keys.hash_secret(secret)


def test_key_over_its_rate_limit_gets_429_with_retry_after(make_key, house_policy):
    _, secret = make_key(rate_limit_per_minute=2)
    api = ApiClient(secret)
    responses = [api.get(ITEMS) for _ in range(5)]
    assert [r.status_code for r in responses[:2]] == [200, 200]
    # The third request of a minute is refused (the fifth at the latest, should the minute turn meanwhile).
    refused = next(r for r in responses if r.status_code == 429)
    assert_error(refused, 429, "rate_limited", "2 requests per minute")
    assert 1 <= int(refused["Retry-After"]) <= 60


def test_rate_limit_is_counted_in_the_database_without_redis(make_key, house_policy, settings):
    settings.CELERY_BROKER_URL = "filesystem://"  # the embedded configuration
    key, _ = make_key(rate_limit_per_minute=2)
    decisions = [keys.hit(key, now=120.0 + n) for n in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert keys.hit(key, now=180.0).allowed  # a new minute


def test_rate_limit_counts_each_key_separately(make_key, house_policy):
    _, limited = make_key("limited", rate_limit_per_minute=1)
    _, other = make_key("other")
    ApiClient(limited).get(ITEMS)
    ApiClient(limited).get(ITEMS)
    assert ApiClient(other).get(ITEMS).status_code == 200


# ----------------------------------------------------------------- malformed requests


def test_malformed_json_is_400_with_the_position(api, house_policy):
    response = api.post(ITEMS, '{"policy": "house", "items": [', raw=True)
    assert_error(response, 400, "malformed_json", "not valid JSON", "line 1")


def test_empty_body_is_422_asking_for_a_json_object(api, house_policy):
    assert_error(api.post(ITEMS, "", raw=True), 422, "invalid_request", "JSON object")


def test_missing_prompt_is_422_naming_the_field(api, house_policy):
    response = api.post(ITEMS, {"policy": "house", "items": [{"prompt": "ok"}, {"response": "no prompt"}]})
    assert_error(response, 422, "invalid_request", "items[1].prompt", "required")


def test_wrong_type_is_422_naming_the_field(api, house_policy):
    response = api.post(ITEMS, {"policy": "house", "items": [{"prompt": 42}]})
    assert_error(response, 422, "invalid_request", "items[0].prompt", "string")


def test_items_not_a_list_is_422(api, house_policy):
    assert_error(api.post(ITEMS, {"policy": "house", "items": "hello"}), 422, "invalid_request", "items")


def test_unknown_field_is_422_naming_it(api, house_policy):
    response = api.post(MODERATE, {"prompt": "hi", "policy": "house", "respons": "typo"})
    assert_error(response, 422, "invalid_request", "respons", "unknown field")


def test_unknown_mode_is_422(api, house_policy):
    assert_error(api.post(MODERATE, {"prompt": "hi", "policy": "house", "mode": "slow"}), 422, "invalid_request", "mode")


def test_moderate_without_policy_is_422_naming_it(api, house_policy):
    assert_error(api.post(MODERATE, {"prompt": "hi"}), 422, "invalid_request", "policy")


def test_empty_prompt_is_422(api, house_policy):
    assert_error(api.post(ITEMS, batch("ok", "   ")), 422, "invalid_request", "items[1].prompt", "empty")


def test_text_over_the_limit_is_422_naming_the_item(api, house_policy, settings):
    settings.GUARD_MAX_TEXT_CHARS = 50
    body = {"policy": "house", "items": [{"prompt": "short"}, {"prompt": "fine", "response": "x" * 51}]}
    assert_error(api.post(ITEMS, body), 422, "text_too_long", "items[1].response", "51 characters", "limit is 50")
    assert_error(api.post(MODERATE, {"prompt": "y" * 60, "policy": "house"}), 422, "text_too_long", "prompt has 60")
    assert not Item.objects.exists()


def test_external_id_over_200_characters_is_422(api, house_policy):
    response = api.post(ITEMS, {"policy": "house", "items": [{"prompt": "a", "external_id": "e" * 201}]})
    assert_error(response, 422, "invalid_request", "items[0].external_id")


def test_batch_over_the_limit_is_422(api, house_policy, settings):
    settings.MODERATION_MAX_BATCH = 3
    assert_error(api.post(ITEMS, batch("a", "b", "c", "d")), 422, "batch_too_large", "4 items", "limit is 3")


def test_body_over_the_server_limit_is_413(api, house_policy, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(ITEMS, batch(*["x" * 100] * 20))
    assert_error(response, 413, "request_too_large", "at most 1000", "fewer items")


def test_the_request_body_limit_defaults_to_one_mebibyte(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 1024 * 1024  # MAX_REQUEST_BODY_BYTES unset


def test_a_batch_just_under_the_body_limit_is_accepted(api, house_policy):
    # 200 items of 5,000 characters: about 1.0 MB of JSON.
    assert api.post(ITEMS, batch(*["y" * 5000] * 200)).status_code == 202


def test_a_3_mb_body_is_413_naming_the_limit_and_its_setting(api, house_policy):
    response = api.post(ITEMS, batch(*["y" * 30000] * 100))
    assert_error(response, 413, "request_too_large", f"at most {1024 * 1024}", "MAX_REQUEST_BODY_BYTES", "fewer items")
    assert not Item.objects.exists()


def test_empty_batch_is_422(api, house_policy):
    assert_error(api.post(ITEMS, {"policy": "house", "items": []}), 422, "invalid_request", "at least one item")


def test_item_without_any_policy_is_422(api, house_policy):
    response = api.post(ITEMS, {"items": [{"prompt": "a"}]})
    assert_error(response, 422, "invalid_request", "items[0].policy")


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("nope", ["no policy with slug 'nope'"]),
        ("house@7", ["no version 7", "published: 1"]),
        ("house@latest", ["not a positive number"]),
        ("draftonly", ["no published version"]),
    ],
)
def test_unknown_policy_or_version_is_422(api, house_policy, reference, words):
    Policy = house_policy.policy.__class__
    Policy.objects.create(slug="draftonly", name="Draft only").draft()
    assert_error(api.post(ITEMS, batch("a", policy=reference)), 422, "unknown_policy", *words)
    assert_error(api.post(MODERATE, {"prompt": "a", "policy": reference}), 422, "unknown_policy", *words)


def test_per_item_policy_error_names_the_item(api, house_policy):
    body = {"policy": "house", "items": [{"prompt": "a"}, {"prompt": "b", "policy": "ghost"}]}
    assert_error(api.post(ITEMS, body), 422, "unknown_policy", "items[1].policy")


def test_invalid_status_filter_is_422(api):
    assert_error(api.get(ITEMS, {"status": "lost"}), 422, "invalid_request", "status")


def test_invalid_since_is_422(api):
    assert_error(api.get(ITEMS, {"since": "yesterday"}), 422, "invalid_request", "since")


def test_invalid_cursor_is_422(api):
    assert_error(api.get(ITEMS, {"cursor": "garbage"}), 422, "invalid_request", "cursor")


def test_unknown_item_is_404(api):
    assert_error(api.get(f"{ITEMS}/999999"), 404, "not_found", "999999")


def test_item_of_another_client_is_404(api, make_key, house_policy):
    _, other_secret = make_key("other")
    item_id = ApiClient(other_secret).post(ITEMS, batch("theirs")).json()["ids"][0]
    assert_error(api.get(f"{ITEMS}/{item_id}"), 404, "not_found")


@pytest.mark.django_db(transaction=True)
def test_database_down_is_503_with_retry_after(make_key, house_policy):
    _, secret = make_key()
    api = ApiClient(secret)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="1")  # nothing listens there
    try:
        response = api.post(ITEMS, batch("hello"))
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert_error(response, 503, "service_unavailable", "database")
    assert response["Retry-After"] == "5"


# ----------------------------------------------------------------- accepting batches


def test_batch_is_accepted_with_202_and_ids_at_once(api, house_policy, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api.post(ITEMS, batch("first", "second"))
    assert response.status_code == 202
    body = response.json()
    assert body["count"] == 2 and len(body["ids"]) == 2
    assert [i["external_id"] for i in body["items"]] == ["ext-0", "ext-1"]
    items = Item.objects.filter(pk__in=body["ids"])
    assert {i.policy_version_id for i in items} == {house_policy.pk}
    # Queued only after commit: the wake-up is an on-commit callback.
    assert len(callbacks) == 1
    assert set(items.values_list("status", flat=True)) == {"queued"}


def test_no_wake_up_is_published_for_a_rolled_back_batch(api, house_policy, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert api.post(ITEMS, batch("fine", "   ")).status_code == 422
    assert callbacks == [] and not Item.objects.exists()


def test_explicit_version_and_per_item_overrides_are_used(api, house_policy):
    second = publish_policy("other")
    body = {"policy": "house@1", "mode": "reason", "items": [{"prompt": "a"}, {"prompt": "b", "policy": "other", "mode": "fast"}]}
    ids = api.post(ITEMS, body).json()["ids"]
    first, other = Item.objects.get(pk=ids[0]), Item.objects.get(pk=ids[1])
    assert (first.policy_version_id, first.mode) == (house_policy.pk, "reason")
    assert (other.policy_version_id, other.mode) == (second.pk, "fast")


def test_repeated_request_with_the_same_idempotency_key_gets_the_same_answer(api, house_policy):
    first = api.post(ITEMS, batch("a", "b"), headers={"Idempotency-Key": "order-42"})
    again = api.post(ITEMS, batch("a", "b"), headers={"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Item.objects.count() == 2


def test_same_idempotency_key_with_a_different_body_is_409(api, house_policy):
    api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "k1"})
    response = api.post(ITEMS, batch("b"), headers={"Idempotency-Key": "k1"})
    assert_error(response, 409, "idempotency_key_reused", "k1")
    assert Item.objects.count() == 1


def test_idempotency_keys_belong_to_one_client(api, make_key, house_policy):
    _, other_secret = make_key("other")
    mine = api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "shared"}).json()
    theirs = ApiClient(other_secret).post(ITEMS, batch("a"), headers={"Idempotency-Key": "shared"}).json()
    assert mine["ids"] != theirs["ids"]


def test_a_failed_request_does_not_use_up_its_idempotency_key(api, house_policy):
    assert api.post(ITEMS, batch("a", policy="ghost"), headers={"Idempotency-Key": "retry-me"}).status_code == 422
    assert api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "retry-me"}).status_code == 202


def test_expired_idempotency_record_lets_the_key_start_a_new_batch(api, house_policy):
    first = api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "old"}).json()
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(days=2))
    second = api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "old"}).json()
    assert first["ids"] != second["ids"]


def test_overlong_idempotency_key_is_400(api, house_policy):
    assert_error(api.post(ITEMS, batch("a"), headers={"Idempotency-Key": "k" * 201}), 400, "invalid_idempotency_key")


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_with_one_idempotency_key_create_one_batch(make_key, house_policy):
    _, secret = make_key()
    answers: list = []

    def send() -> None:
        try:
            answers.append(ApiClient(secret).post(ITEMS, batch("a", "b", "c"), headers={"Idempotency-Key": "race"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {202}
    assert len({tuple(a.json()["ids"]) for a in answers}) == 1
    assert Item.objects.count() == 3


# ----------------------------------------------------------------- polling and the synchronous endpoint


def test_polled_item_shows_its_verdict_once_classified(api, house_policy, tiny_guard, quiet_review):
    item_id = api.post(ITEMS, batch("How do I bake bread?")).json()["ids"][0]
    assert api.get(f"{ITEMS}/{item_id}").json()["verdict"] is None
    assert dispatch.run_pending(time_budget_s=60).stored == 1
    body = api.get(f"{ITEMS}/{item_id}").json()
    assert body["status"] == "done"
    assert body["external_id"] == "ext-0"
    assert body["verdict"]["policy_version"] == "house@1"
    assert body["verdict"]["action"] in {"block", "flag", "allow"}
    assert body["verdict"]["prompt_label"] in {"safe", "unsafe"}


def test_list_filters_by_status_and_since_and_pages_with_a_cursor(api, house_policy):
    ids = api.post(ITEMS, batch(*[f"p{n}" for n in range(5)])).json()["ids"]
    Item.objects.filter(pk=ids[0]).update(status="failed", last_error="gave up")
    failed = api.get(ITEMS, {"status": "failed"}).json()
    assert [i["id"] for i in failed["items"]] == [ids[0]] and failed["items"][0]["error"] == "gave up"
    assert api.get(ITEMS, {"since": (timezone.now() + timedelta(minutes=1)).isoformat()}).json()["count"] == 0
    seen, cursor = [], None
    while True:
        page = api.get(ITEMS, {"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


def test_moderate_answers_the_verdict_and_the_decided_action(api, house_policy, tiny_guard, quiet_review):
    response = api.post(MODERATE, {"prompt": "Tell me a joke", "response": "Why did the chicken...", "policy": "house", "mode": "fast"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"id", "prompt_label", "response_label", "refusal_label", "categories", "explanation", "confidence", "model", "policy_version", "latency_ms", "action"}
    assert body["policy_version"] == "house@1"
    assert body["response_label"] in {"safe", "unsafe"}
    stored = Verdict.objects.get(item_id=body["id"])
    assert stored.action == body["action"] and stored.item.status == "done" and stored.item.origin == "moderate"


def test_interactive_docs_work_offline(client):
    html = client.get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html and "cdn." not in html
