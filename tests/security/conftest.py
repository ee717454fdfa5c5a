"""The URL walk: every URL pattern of the project, filled with real objects.

``ROUTES`` is computed from Django's resolver when the tests are collected, so
a URL added by any app is walked without touching these tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from guardsite.roles import ADMIN, ALL_ROLES, POLICY_EDITOR, REVIEWER, VIEWER

# Most privileged last: an allowed POST (publish, revoke, discard) changes the
# objects, a refused one does not, so the refused roles are tried first.
ROLES_IN_WALK_ORDER = (VIEWER, REVIEWER, POLICY_EDITOR, ADMIN)

EDITORS = frozenset({ADMIN, POLICY_EDITOR})
REVIEWERS = frozenset({ADMIN, REVIEWER})
ADMINS = frozenset({ADMIN})
SIGNED_IN = frozenset(ALL_ROLES)

# Who may use a URL where that is stricter than "signed in". Keys are regular
# expressions matched against "namespace:name" (fullmatch); first match wins.
# A URL without an entry here falls back to the roles its view declares with
# ``role_required`` (admin implied), else to every signed-in user.
ROLE_RULES: list[tuple[str, frozenset[str]]] = [
    # Policies: reading is for everyone; changing, importing, publishing, rolling back is for editors.
    (r"policies:(create|import|import-into-draft|draft-header|draft-discard|publish|rollback)", EDITORS),
    (r"policies:category-(add|edit|delete|move)", EDITORS),
    # The review queue and its statistics: reviewers.
    (r"moderation:review(-.*)?", REVIEWERS),
    # API keys: admins only.
    (r".*:api-keys?(-.*)?", ADMINS),
    # Starting evaluations and training runs: editors.
    (r"evaluation:start", EDITORS),
    (r"trainer:(start|new|create|cancel|resume).*", EDITORS),
    # Promotion of a model to production (forced past a failed gate too) and rollback: admins.
    (r"guard:(.*promot.*|rollback.*)", ADMINS),
    (r".*:.*force.*", ADMINS),
]

# Reachable without signing in.
PUBLIC = {"login", "healthz", "favicon", "moderation:api-v1:openapi-json", "moderation:api-v1:openapi-view"}
# django-ninja's root of the API: answers 404 to everyone (it serves nothing).
EMPTY = {"moderation:api-v1:api-root"}


@dataclass(frozen=True)
class Route:
    route: str  # Django route syntax, e.g. "items/<int:item_id>/"
    name: str  # "namespace:name"
    callback: Any

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    @property
    def declared_roles(self) -> frozenset[str] | None:
        roles = getattr(self.callback, "required_roles", None)
        return None if roles is None else frozenset({ADMIN, *roles})

    def allowed_roles(self) -> frozenset[str]:
        for pattern, roles in ROLE_RULES:
            if re.fullmatch(pattern, self.name):
                return roles
        return self.declared_roles or SIGNED_IN

    def __str__(self) -> str:
        return self.name


def _walk(resolver: URLResolver, prefix: str = "", namespaces: tuple[str, ...] = ()) -> list[Route]:
    routes = []
    for pattern in resolver.url_patterns:
        text = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if text.startswith("admin/"):
                continue  # Django's admin: only its index is walked (below)
            spaces = namespaces + ((pattern.namespace,) if pattern.namespace else ())
            routes.extend(_walk(pattern, text, spaces))
        elif isinstance(pattern, URLPattern):
            name = ":".join((*namespaces, pattern.name or text))
            routes.append(Route(text, name, pattern.callback))
    return routes


def all_routes() -> list[Route]:
    return [*_walk(get_resolver()), Route("admin/", "admin:index", None)]


ROUTES = all_routes()
PAGE_ROUTES = [r for r in ROUTES if not r.is_api]
API_ROUTES = [r for r in ROUTES if r.is_api and r.name not in PUBLIC | EMPTY]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Dozens of users are signed in per test; PBKDF2's deliberate slowness buys nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def site(db, role_users) -> dict[str, Any]:
    """One of every object a URL can name: a policy with a published version and a draft
    category, an item with its verdict and open review task, an API key, an evaluation run,
    a registered model version."""
    from evaluation.models import EvaluationRun
    from guard.models import ModelVersion
    from moderation import keys
    from moderation.models import Item, ReviewTask, Verdict
    from policies.models import Category, Policy

    policy = Policy.objects.create(slug="walk", name="Walk policy")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="S1", name="Weapons", description="No weapons.", action="flag")
    version = policy.publish(change_note="first")
    category = policy.draft().categories.first()
    item = Item.objects.create(policy_version=version, prompt="How do I pick a lock?", status="done", attempts=1)
    Verdict.objects.create(item=item, prompt_label="unsafe", categories=["S1"], explanation="S1.", action="flag", confidence=0.9)
    task = ReviewTask.objects.create(item=item, reason="flag")
    key, secret = keys.create_key("walk-client")
    run = EvaluationRun.objects.create(status="done", done=1, total=1)
    model = ModelVersion.objects.create(name="walk-model")
    by_namespace_pk = {"policies": category.pk, "evaluation": run.pk, "guard": model.pk}
    try:
        from trainer.models import TrainingJob  # type: ignore[import-not-found]

        with transaction.atomic():
            job = TrainingJob.objects.create(recipe="sft", status="failed")
        by_namespace_pk["trainer"] = job.pk
    except Exception:  # noqa: BLE001 - the trainer app may not define jobs (yet), or other fields
        pass
    return {
        "policy": policy, "version": version, "category": category, "item": item, "task": task,
        "key": key, "secret": secret, "run": run, "model": model, "pk": by_namespace_pk, "users": role_users,
    }


def url_for(route: Route, site: dict[str, Any]) -> str:
    """The route with every parameter replaced by a real object's value."""
    namespace = route.name.split(":", 1)[0]

    def fill(match: re.Match) -> str:
        converter, name = match.group(1) or "str", match.group(2)
        values = {
            "slug": site["policy"].slug,
            "number": site["version"].number,
            "item_id": site["item"].pk,
            "task_id": site["task"].pk,
            "key_id": site["key"].pk,
            "pk": site["pk"].get(namespace, 1),
            "id": site["pk"].get(namespace, 1),
            "name": site["model"].name,
        }
        if name in values:
            return str(values[name])
        return "1" if converter == "int" else "x"

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", fill, route.route)


def client_for(role: str | None, site: dict[str, Any], **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if role is not None:
        client.force_login(site["users"][role])
    return client
