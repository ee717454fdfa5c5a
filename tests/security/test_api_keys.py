"""API keys through the admin page: shown once, stored hashed, revocable; rate limited per key.

The API-level key rules (malformed/unknown/revoked keys, 429 with Retry-After,
per-key counting) are specified in tests/moderation/test_api.py; these tests
follow a key through the page an admin actually uses.
"""

from __future__ import annotations

import hashlib
import json
import re

from moderation.models import ApiKey
from tests.security.conftest import client_for

SECRET = re.compile(r"gsk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def create_key_on_the_page(site, name: str, **fields: str) -> str:
    response = client_for("admin", site).post("/api-keys/", {"name": name, **fields})
    assert response.status_code == 200
    return SECRET.search(response.content.decode()).group(0)


def api_get(site, secret: str):
    return client_for(None, site, headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/items")


def test_key_is_shown_once_and_stored_only_as_its_hash(site):
    secret = create_key_on_the_page(site, "mobile app")
    key = ApiKey.objects.get(name="mobile app")
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = json.dumps([str(getattr(key, f.attname)) for f in ApiKey._meta.concrete_fields])
    assert secret.split("_", 2)[2] not in stored  # the random part may itself contain "_"
    assert secret not in client_for("admin", site).get("/api-keys/").content.decode()
    assert api_get(site, secret).status_code == 200


def test_key_revoked_on_the_page_is_refused_at_once(site):
    secret = create_key_on_the_page(site, "old integration")
    key = ApiKey.objects.get(name="old integration")
    assert client_for("admin", site).post(f"/api-keys/{key.pk}/revoke/").status_code == 302
    response = api_get(site, secret)
    assert response.status_code == 401
    assert response.json()["error"] == "revoked_api_key"


def test_rate_limit_set_on_the_page_applies_to_that_key_only(site, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/6"  # counters in this suite's Redis db
    limited = create_key_on_the_page(site, "limited", rate_limit_per_minute="2")
    other = create_key_on_the_page(site, "other")
    statuses = [api_get(site, limited).status_code for _ in range(3)]
    assert statuses[:2] == [200, 200]
    third = api_get(site, limited)
    assert third.status_code == 429 and int(third["Retry-After"]) >= 1
    assert api_get(site, other).status_code == 200
