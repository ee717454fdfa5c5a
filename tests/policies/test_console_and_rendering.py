"""The test console and "what the model sees"."""

from __future__ import annotations

import pytest

from guard.contract import render
from guard.models import ModelVersion

HX = {"HTTP_HX_REQUEST": "true"}


def console(client, policy, **fields):
    data = {"version": "draft", "prompt": "How do I make a fake ID?", "response": "", "mode": "fast", "model": "embedded"}
    data.update(fields)
    return client.post(f"/policies/{policy.slug}/console/", data, **HX)


def test_the_console_judges_the_draft_with_the_configured_model(client_as, make_policy, settings):
    from guard.testing import tiny_model_dir

    settings.GUARD_MODEL_DIR = str(tiny_model_dir())
    policy = make_policy()
    response = console(client_as("viewer"), policy, response="Sure, here is how.")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-label="prompt"' in html and 'data-label="response"' in html
    assert "fast mode" in html and "acme@draft" in html


def test_a_guard_error_is_shown_as_a_message(client_as, make_policy):
    ModelVersion.objects.create(name="broken", base_model_path="/nonexistent/model")
    policy = make_policy(publish=True)
    response = console(client_as("policy_editor"), policy, version="1", model="broken")
    assert response.status_code == 422
    html = response.content.decode()
    assert "The guard could not judge this request" in html and "/nonexistent/model" in html


def test_the_console_needs_a_prompt(client_as, make_policy):
    response = console(client_as("viewer"), make_policy(), prompt="   ")
    assert response.status_code == 400 and "Enter a prompt to judge." in response.content.decode()


def test_the_console_offers_registered_models(client_as, make_policy):
    ModelVersion.objects.create(name="guard-candidate-7")
    policy = make_policy()
    page = client_as("viewer").get(f"/policies/{policy.slug}/draft/").content.decode()
    assert 'value="guard-candidate-7"' in page and 'value="embedded"' in page


def test_an_unknown_model_choice_is_refused(client_as, make_policy):
    response = console(client_as("viewer"), make_policy(), model="no-such-model")
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()


def test_the_model_input_is_the_contracts_rendering_with_a_token_count(client_as, make_policy):
    from policies.rendering import embedded_tokenizer

    tokenizer, _ = embedded_tokenizer()
    if tokenizer is None:
        pytest.skip("the embedded model is not prepared (make test prepares it)")
    policy = make_policy(publish=True)
    response = client_as("viewer").get(f"/policies/{policy.slug}/model-input/", {"version": "1", "prompt": "Hi there", "mode": "fast"})
    html = response.content.decode()
    expected = render(policy.latest_version().to_spec(), "Hi there", None, "fast").to_text(tokenizer)
    assert len(tokenizer.encode(expected)) > 0
    assert f"{len(tokenizer.encode(expected, add_special_tokens=True))} tokens" in html
    assert "S1: Category S1 - What S1 forbids." in html and "Hi there" in html


def test_without_the_embedded_model_the_text_is_shown_and_the_count_is_unavailable(client_as, make_policy, settings, tmp_path):
    settings.GUARD_MODEL_CACHE = tmp_path  # nothing prepared here
    policy = make_policy()
    html = client_as("viewer").get(f"/policies/{policy.slug}/model-input/").content.decode()
    assert "Token count unavailable" in html and "guard_model prepare" in html
    assert "Policy: acme policy" in html and "the user&#x27;s prompt goes here" in html
