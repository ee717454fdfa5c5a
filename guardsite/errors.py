"""Error views. A database outage is answered with 503 and a retry hint, never a 500."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error


def database_is_down(exc: BaseException | None) -> bool:
    """True when ``exc`` is a database error AND the database does not answer now.

    An SQL mistake is also an ``OperationalError`` (on SQLite); that is a bug
    (500), not an outage (503), so the database is probed before answering.
    """
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return not database_answers()
        exc = exc.__cause__ or exc.__context__
    return False


def database_answers() -> bool:
    from django.db import connection

    try:
        connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means it does not answer
        return False
    return True


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
