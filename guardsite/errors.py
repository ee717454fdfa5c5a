"""Error views. A database outage is answered with 503 and a retry hint, never a 500."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error

# SQLSTATE classes that mean "the server went away or cannot serve now":
# 08 connection exception, 57 operator intervention (admin/crash shutdown,
# cannot connect now), 53 insufficient resources (too many connections).
OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "57", "53"})


def database_is_down(exc: BaseException | None) -> bool:
    """True when ``exc`` comes from a database outage rather than from a bug.

    A lost PostgreSQL connection is recognised from the driver's error itself:
    probing afterwards is not enough, because a request that failed in the
    last moment of a restart would find the database back up and be answered
    500. Anything else that Django reports as ``OperationalError`` (an SQL
    mistake on SQLite, say) is an outage only if the database does not answer now.
    """
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return lost_connection(exc) or not database_answers()
        exc = exc.__cause__ or exc.__context__
    return False


def lost_connection(exc: BaseException) -> bool:
    """True when ``exc`` (or the psycopg error under it) says the connection failed."""
    import psycopg

    if isinstance(exc, InterfaceError):
        return True  # "connection already closed" and the like: never an SQL mistake
    cause = exc.__cause__
    if isinstance(cause, psycopg.OperationalError):
        sqlstate = cause.sqlstate
        # No SQLSTATE: the client lost the server mid-query or could not connect.
        return sqlstate is None or sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES
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
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "internal_error", "detail": "the server failed to answer this request; it has been logged"},
            status=500,
        )
    return server_error(request)
