"""Error answers: the app's own pages for people, JSON under /api/ for programs, in the demo too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import RequestFactory

from guardsite.errors import handler500

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["/this-page-does-not-exist/", "/policies/no-such-policy/", "/items/999999/"])
def test_an_unknown_page_shows_the_apps_own_404_page_without_url_patterns(client_as, path):
    response = client_as("viewer").get(path)
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="error-page"' in html and "Page not found" in html
    assert "URLconf" not in html and "api/v1/" not in html and "Traceback" not in html


def test_the_404_page_keeps_the_navigation(client_as):
    html = client_as("viewer").get("/nowhere/").content.decode()
    assert 'class="topnav"' in html and 'href="/items/"' in html


def test_a_missing_role_shows_the_apps_own_403_page_saying_which_role(client_as):
    response = client_as("viewer").get("/review/")
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode() and "reviewer" in response.content.decode()


def test_a_server_error_shows_the_apps_own_500_page():
    response = handler500(RequestFactory().get("/items/"))
    assert response.status_code == 500
    assert b"Something went wrong" in response.content and b"Traceback" not in response.content


def test_a_server_error_under_the_api_answers_json():
    response = handler500(RequestFactory().get("/api/v1/items"))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["error"] == "internal_error"


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_api_path_answers_json_404_naming_it(client, db, settings, debug):
    settings.DEBUG = debug
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "not_found" and "/api/v1/nope" in body["detail"] and "openapi.json" in body["detail"]


def test_an_unknown_path_right_under_api_answers_json_404(client, db):
    response = client.post("/api/nothing-here", data="{}", content_type="application/json")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_a_wrong_method_on_an_api_endpoint_answers_json_405_listing_the_allowed_ones(client, db):
    response = client.delete("/api/v1/moderate")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "method_not_allowed"
    assert "DELETE is not allowed on /api/v1/moderate" in body["detail"] and "POST" in body["detail"]
    assert "POST" in response["Allow"]


def test_the_api_own_json_errors_pass_through_unchanged(client, db):
    response = client.get("/api/v1/items")
    assert response.status_code == 401 and response.json()["error"] == "missing_api_key"


def test_the_demo_runs_with_debug_off_unless_asked():
    script = (REPO / "scripts" / "demo.sh").read_text()
    assignment = re.search(r"^export DEBUG=(.*)$", script, re.MULTILINE)
    assert assignment and assignment.group(1).rstrip().endswith(":-0}}"), assignment
