"""Roles are Django groups. Views check them with the decorators below.

admin          everything, including API keys, promotion and forced promotion
policy_editor  edit and publish policies; start evaluations and training
reviewer       work the review queue
viewer         read-only
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

ADMIN = "admin"
POLICY_EDITOR = "policy_editor"
REVIEWER = "reviewer"
VIEWER = "viewer"
ALL_ROLES = (ADMIN, POLICY_EDITOR, REVIEWER, VIEWER)


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    if getattr(user, "is_superuser", False):
        return {ADMIN}
    cached = getattr(user, "_guardsite_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
        user._guardsite_roles = cached  # type: ignore[union-attr]
    return cached


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    """True when the user holds any of ``roles``; admins hold every role."""
    held = user_roles(user)
    return ADMIN in held or bool(held.intersection(roles))


def can_edit_policies(user: AbstractBaseUser | AnonymousUser) -> bool:
    return has_role(user, POLICY_EDITOR)


def can_review(user: AbstractBaseUser | AnonymousUser) -> bool:
    return has_role(user, REVIEWER)


def is_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    return has_role(user)


def role_required(*roles: str) -> Callable:
    """View decorator: 403 unless the signed-in user holds one of ``roles``.

    Authentication itself is enforced for every URL by
    ``LoginRequiredEverywhereMiddleware``.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_role(request.user, *roles):
                raise PermissionDenied(f"This needs one of the roles: {', '.join(roles) or 'admin'}.")
            return view(request, *args, **kwargs)

        wrapped.required_roles = roles  # type: ignore[attr-defined]
        return wrapped

    return decorator


def roles_context(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", AnonymousUser())
    return {
        "can_edit_policies": can_edit_policies(user),
        "can_review": can_review(user),
        "is_admin": is_admin(user),
    }
