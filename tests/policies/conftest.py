"""Fixtures for the policies tests: policies built through the same model API the views use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from guard.contract import CategorySpec, PolicySpec
from policies import presets
from policies.models import Policy


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """The default PBKDF2 costs ~1.5 s a user on the CI machine; these tests sign in many users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_policy(db) -> Callable[..., Policy]:
    def make(slug: str = "acme", preset: str | None = None, codes: tuple[str, ...] = ("S1", "S2"), publish: bool = False) -> Policy:
        if preset:
            spec = presets.preset_spec(preset)
        else:
            spec = PolicySpec(
                name=f"{slug} policy",
                categories=tuple(CategorySpec(code, f"Category {code}", f"What {code} forbids.") for code in codes),
            )
        policy = Policy.create_from_spec(spec, slug=slug)
        if publish:
            policy.publish(change_note="first")
        return policy

    return make


@pytest.fixture(scope="session")
def warm_tokenizer() -> None:
    """Load the embedded tokenizer once, up front, so no page request is still loading it
    (for seconds) when a live-server test ends and its database is flushed."""
    from policies.rendering import embedded_tokenizer

    embedded_tokenizer()
