"""CSRF: every page URL refuses a POST without a token, and every form carries one."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.security.conftest import PAGE_ROUTES, Route, client_for, url_for


@pytest.mark.parametrize("route", PAGE_ROUTES, ids=str)
def test_post_without_a_csrf_token_is_refused(route: Route, site):
    # Signed in as admin (every role rule lets an admin through): the only reason to refuse is CSRF.
    role = None if route.name == "login" else "admin"
    client = client_for(role, site, enforce_csrf_checks=True)
    response = client.post(url_for(route, site), {"name": "x"})
    assert response.status_code == 403, f"{route.name}: {response.status_code}"
    assert b"CSRF" in response.content


@pytest.mark.parametrize("route", [r for r in PAGE_ROUTES if r.callback is not None], ids=str)
def test_no_page_view_is_exempt_from_csrf(route: Route):
    assert not getattr(route.callback, "csrf_exempt", False), f"{route.name} is csrf_exempt"


class FormFinder(HTMLParser):
    """Collects POST forms (with whether they hold a csrfmiddlewaretoken) and htmx mutations."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.htmx_posts = 0
        self.csrf_header = False
        self._open: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "body" and "X-CSRFToken" in (values.get("hx-headers") or ""):
            self.csrf_header = True
        if any(name in values for name in ("hx-post", "hx-put", "hx-patch", "hx-delete")):
            self.htmx_posts += 1
        if tag == "form" and (values.get("method") or "get").lower() == "post":
            self._open = {"action": values.get("action"), "token": False}
            self.forms.append(self._open)
        if tag == "input" and values.get("name") == "csrfmiddlewaretoken" and self._open is not None:
            self._open["token"] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


@pytest.mark.parametrize("route", [r for r in PAGE_ROUTES if not r.name.startswith("admin:")], ids=str)
def test_every_post_form_on_a_page_carries_a_csrf_token(route: Route, site):
    response = client_for("admin", site).get(url_for(route, site))
    if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
        return  # POST-only, a redirect or a download: nothing to parse
    finder = FormFinder()
    finder.feed(response.content.decode())
    missing = [form["action"] for form in finder.forms if not form["token"]]
    assert not missing, f"{route.name}: POST forms without csrfmiddlewaretoken: {missing}"
    if finder.htmx_posts and "<body" in response.content.decode():
        assert finder.csrf_header, f"{route.name}: htmx requests would be sent without the CSRF header"
