from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

# Paths that authenticate themselves (API keys) or must stay public.
PUBLIC_PREFIXES = ("/accounts/login/", "/static/", "/healthz", "/api/")


class LoginRequiredEverywhereMiddleware:
    """Every page needs a signed-in user; the API authenticates with its own keys."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(PUBLIC_PREFIXES) and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)
