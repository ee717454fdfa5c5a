"""Error views. A database outage is answered with 503 and a retry hint, never a 500."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error


def database_is_down(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def service_unavailable() -> JsonResponse:
    response = JsonResponse(
        {"error": "service_unavailable", "detail": "The database is unavailable; retry shortly."},
        status=503,
    )
    response["Retry-After"] = "5"
    return response


def handler500(request: HttpRequest) -> HttpResponse:
    if database_is_down(sys.exc_info()[1]):
        return service_unavailable()
    return server_error(request)
