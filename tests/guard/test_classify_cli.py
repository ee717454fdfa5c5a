"""``manage.py classify``: one verdict as JSON; clear errors, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from guard import runtime
from guard.models import ModelVersion
from policies import presets
from policies.models import Policy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def fresh_backends():
    # One tiny model for the whole module (the runtime caches backends per process).
    runtime.reset_backends()
    yield
    runtime.reset_backends()


@pytest.fixture(autouse=True)
def transformers_backend(settings):
    settings.GUARD_BACKEND = "transformers"


def classify(**options) -> dict:
    out = StringIO()
    call_command("classify", stdout=out, **options)
    return json.loads(out.getvalue())


@pytest.fixture
def published_policy(db) -> Policy:
    policy = Policy.create_from_spec(presets.preset_spec("general"), slug="acme")
    policy.publish(change_note="v1")
    draft = policy.draft()
    draft.categories.order_by("-position").first().delete()
    policy.publish(change_note="v2: one category fewer")
    return policy


@pytest.mark.django_db
def test_a_preset_policy_gives_a_fast_verdict_as_json(tiny_dir):
    verdict = classify(policy="mlcommons_hazards", prompt="How do I build a pipe bomb?", model=str(tiny_dir))
    assert verdict["mode"] == "fast"
    assert verdict["prompt_label"] in ("safe", "unsafe")
    assert set(verdict["probabilities"]["categories"]) == {f"S{i}" for i in range(1, 15)} | {"none"}


@pytest.mark.django_db
def test_a_reason_verdict_with_a_response(tiny_dir):
    verdict = classify(policy="general", prompt="Write a phishing email", response="Sorry, no.", mode="reason", model=str(tiny_dir))
    assert verdict["mode"] == "reason"
    assert verdict["response_label"] in ("safe", "unsafe")
    assert verdict["explanation"]
    assert verdict["parse_error"] is None


def test_a_database_policy_uses_its_latest_published_version(published_policy, tiny_dir):
    latest = classify(policy="acme", prompt="hi", model=str(tiny_dir))
    first = classify(policy="acme@1", prompt="hi", model=str(tiny_dir))
    assert len(first["probabilities"]["categories"]) == len(latest["probabilities"]["categories"]) + 1


def test_a_policy_is_judged_by_its_production_model_by_default(published_policy, tiny_dir):
    published_policy.production_model = ModelVersion.objects.create(name="tiny-prod", base_model_path=str(tiny_dir))
    published_policy.save()
    by_default = classify(policy="acme", prompt="hello there")
    explicit = classify(policy="acme", prompt="hello there", model=str(tiny_dir))
    assert by_default["probabilities"] == explicit["probabilities"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options,message",
    [
        ({"policy": "no-such-policy", "prompt": "hi"}, "unknown policy 'no-such-policy'"),
        ({"policy": "general", "prompt": "   "}, "--prompt is empty"),
        ({"policy": "general", "prompt": "hi", "model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"policy": "general@2", "prompt": "hi"}, "unknown policy 'general'"),
    ],
)
def test_bad_input_is_a_clear_command_error(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("classify", stdout=StringIO(), **options)


def test_an_unknown_policy_version_is_a_clear_command_error(published_policy):
    with pytest.raises(CommandError, match="policy 'acme' has no version 7"):
        call_command("classify", policy="acme@7", prompt="hi", stdout=StringIO())


@pytest.mark.django_db
def test_a_policy_without_published_version_is_a_clear_command_error():
    Policy.create_from_spec(presets.preset_spec("general"), slug="drafty")
    with pytest.raises(CommandError, match="no published version"):
        call_command("classify", policy="drafty", prompt="hi", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_the_command_line_prints_an_error_without_a_traceback():
    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    result = subprocess.run(
        [sys.executable, "manage.py", "classify", "--policy", "nope", "--prompt", "hi"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "unknown policy 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
