from django.contrib.staticfiles import finders
from django.db import connection
from django.http import FileResponse, HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers 503 while the database is unreachable."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return JsonResponse({"status": "database_unavailable"}, status=503)
    return JsonResponse({"status": "ok"})


def favicon(request: HttpRequest) -> FileResponse:
    """Browsers ask for /favicon.ico where a page names no icon (the API's JSON, the docs)."""
    path = finders.find("guardsite/favicon.svg")
    response = FileResponse(open(str(path), "rb"), content_type="image/svg+xml")  # noqa: SIM115 - FileResponse closes it
    response["Cache-Control"] = "public, max-age=86400"
    return response
