"""Fixtures for the moderation tests: a published policy, API keys, items with verdicts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from guard import contract
from moderation import keys
from moderation.models import ApiKey, Item, ReviewTask
from moderation.verdicts import category_actions, store_verdict
from policies.models import Category, Policy, PolicyVersion

# Category code -> action of the test policy.
HOUSE_CATEGORIES = {"S1": "block", "S2": "flag", "S3": "allow"}


def publish_policy(slug: str, categories: dict[str, str] = HOUSE_CATEGORIES) -> PolicyVersion:
    policy = Policy.objects.create(slug=slug, name=f"{slug} policy")
    draft = policy.draft()
    for position, (code, action) in enumerate(categories.items()):
        Category.objects.create(version=draft, position=position, code=code, name=f"Category {code}", description=f"What {code} forbids.", action=action)
    return policy.publish(change_note="first")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """role_users makes four users per test; PBKDF2 would spend seconds on them."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def house_policy(db) -> PolicyVersion:
    """Policy "house", version 1: S1 blocks, S2 flags, S3 allows."""
    return publish_policy("house")


@pytest.fixture
def tiny_guard(settings) -> str:
    """The in-process guard is the tiny random model (plumbing tests)."""
    from guard.testing import tiny_model_dir

    path = str(tiny_model_dir())
    settings.GUARD_MODEL_DIR = path
    return path


@pytest.fixture
def quiet_review(settings) -> None:
    """No random QC sample or double review unless a test asks for it."""
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    settings.MODERATION_DOUBLE_REVIEW_RATE = 0.0


class ApiClient:
    """The Django test client speaking JSON with an API key."""

    def __init__(self, secret: str, header: str = "bearer") -> None:
        self.client = Client()
        self.secret = secret
        self.header = header

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.secret}"} if self.header == "bearer" else {"X-API-Key": self.secret}
        headers.update(extra or {})
        return headers

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None, raw: bool = False):  # noqa: ANN201
        data = body if raw else json.dumps(body)
        return self.client.post(path, data=data, content_type="application/json", headers=self._headers(headers))

    def get(self, path: str, params: dict | None = None, headers: dict[str, str] | None = None):  # noqa: ANN201
        return self.client.get(path, params or {}, headers=self._headers(headers))


@pytest.fixture
def make_key(db) -> Callable[..., tuple[ApiKey, str]]:
    def make(name: str = "client", **fields: Any) -> tuple[ApiKey, str]:
        return keys.create_key(name, **fields)

    return make


@pytest.fixture
def api(make_key) -> ApiClient:
    _, secret = make_key("test-client")
    return ApiClient(secret)


def guard_verdict(
    prompt_label: str = "unsafe",
    categories: tuple[str, ...] = ("S2",),
    confidence: float | None = 0.9,
    response_label: str | None = None,
    refusal_label: str | None = None,
    explanation: str = "Violates S2 (Category S2).",
) -> contract.Verdict:
    return contract.Verdict(
        prompt_label=prompt_label,
        response_label=response_label,
        refusal_label=refusal_label,
        categories=list(categories),
        explanation=explanation,
        confidence=confidence,
        mode="reason",
    )


@pytest.fixture
def judged_item(house_policy, quiet_review) -> Callable[..., Item]:
    """``judged_item(prompt, verdict)`` -> an item of the house policy with that guard verdict stored."""

    def make(prompt: str = "How do I pick a lock?", verdict: contract.Verdict | None = None, response: str | None = None, **fields: Any) -> Item:
        item = Item.objects.create(policy_version=house_policy, prompt=prompt, response=response, status=Item.Status.RUNNING, attempts=1, **fields)
        store_verdict(item, verdict or guard_verdict(), category_actions(house_policy), "embedded", 12)
        item.refresh_from_db()
        return item

    return make


@pytest.fixture
def flagged_tasks(judged_item) -> Callable[[int], list[ReviewTask]]:
    """``flagged_tasks(n)`` -> n open review tasks (items the policy flags), in queue order."""

    def make(count: int) -> list[ReviewTask]:
        items = [judged_item(f"Flagged prompt number {n}") for n in range(count)]
        return list(ReviewTask.objects.filter(item__in=items).order_by("priority", "id"))

    return make
