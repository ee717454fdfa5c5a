"""The Django admin shows every app's data; immutable records are read-only there."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from moderation.models import ApiKey, AuditLog, Decision, Verdict
from policies.models import PolicyVersion
from tests.ops.test_audit import history  # noqa: F401 - the fixture: one event of each kind
from trainer.models import RegistryEvent

MODELS = [
    ("moderation", "apikey", "Api keys"), ("moderation", "item", "Items"), ("moderation", "verdict", "Verdicts"),
    ("moderation", "reviewtask", "Review tasks"), ("moderation", "decision", "Decisions"), ("moderation", "auditlog", "Audit logs"),
    ("policies", "policy", "Policies"), ("policies", "policyversion", "Policy versions"), ("policies", "category", "Categories"),
    ("guard", "modelversion", "Model versions"), ("trainer", "trainingjob", "Training jobs"),
    ("trainer", "registryevent", "Registry events"), ("evaluation", "evaluationrun", "Evaluation runs"),
    ("ops", "workerheartbeat", "Worker heartbeats"), ("moderation", "webhookdelivery", "Webhook deliveries"),
]


@pytest.fixture
def admin_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw-for-tests-1"))
    return client


def test_the_admin_index_lists_every_apps_models(admin_client):
    html = admin_client.get("/admin/").content.decode()
    for _, _, title in MODELS:
        assert f">{title}</a>" in html, title


@pytest.mark.parametrize("app, model, title", MODELS)
def test_every_model_list_opens_with_data_in_it(admin_client, history, app, model, title):  # noqa: F811
    assert admin_client.get(f"/admin/{app}/{model}/").status_code == 200


@pytest.mark.parametrize("model", [Verdict, Decision, AuditLog, PolicyVersion, RegistryEvent])
def test_immutable_records_are_read_only_in_the_admin(admin_client, history, model):  # noqa: F811
    obj = model.objects.filter(**({"number__isnull": False} if model is PolicyVersion else {})).first()
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    page = admin_client.get(f"{base}{obj.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"{base}{obj.pk}/change/", {}).status_code == 403
    assert admin_client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get(f"{base}add/").status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_an_api_key_can_be_renamed_but_its_hash_is_never_shown(admin_client, history):  # noqa: F811
    key = history["key"]
    page = admin_client.get(f"/admin/moderation/apikey/{key.pk}/change/").content.decode()
    assert key.key_hash not in page and 'name="_save"' in page
    response = admin_client.post(f"/admin/moderation/apikey/{key.pk}/change/", {"name": "shop backend", "rate_limit_per_minute": 60, "webhook_url": ""})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.rate_limit_per_minute) == ("shop backend", 60)
    assert admin_client.get("/admin/moderation/apikey/add/").status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()


def test_a_webhook_url_typed_without_a_scheme_in_the_admin_is_https(admin_client, history):  # noqa: F811
    key = history["key"]
    response = admin_client.post(f"/admin/moderation/apikey/{key.pk}/change/",
                                 {"name": key.name, "rate_limit_per_minute": 60, "webhook_url": "hooks.example.com/guardsite"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.webhook_url == "https://hooks.example.com/guardsite"
