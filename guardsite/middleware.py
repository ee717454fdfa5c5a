from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

# Paths that authenticate themselves (API keys) or must stay public.
PUBLIC_PREFIXES = ("/accounts/login/", "/static/", "/healthz", "/api/", "/favicon.ico")


class LoginRequiredEverywhereMiddleware:
    """Every page needs a signed-in user; the API authenticates with its own keys."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(PUBLIC_PREFIXES) and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)


API_PREFIX = "/api/"
API_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


def api_error_detail(request: HttpRequest, response: HttpResponse) -> str:
    status = response.status_code
    where = f"{request.method} {request.path}"
    if status == 404:
        return f"there is no API endpoint at {request.path}; the endpoints are listed in /api/v1/openapi.json"
    if status == 405:
        allowed = response.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}" + (f"; allowed: {allowed}" if allowed else "")
    if status == 403:
        return f"{where} is forbidden"
    if status >= 500:
        return "the server failed to answer this request; it has been logged"
    return f"{where} could not be served ({status})"


class ApiJsonErrorsMiddleware:
    """Everything under /api/ answers errors as JSON ``{"error", "detail"}``, never HTML.

    The API's own handlers already answer JSON; this catches what Django answers
    before or around them: unknown paths, 405 from the router, 400/403/500 pages.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return api_json_error(request, response)
        return response


def api_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    from django.http import JsonResponse

    status = response.status_code
    body = {"error": API_ERROR_CODES.get(status, "error"), "detail": api_error_detail(request, response)}
    answer = JsonResponse(body, status=status)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            answer[header] = response[header]
    return answer
