"""Presets give each category a sensible severity and action; presets, modes and models
are offered by human names; a new policy is served by the production guard and says so;
policy names are unique, ignoring case."""

from __future__ import annotations

import json
import re

import pytest
from django.db import IntegrityError, transaction

from guard.models import ModelVersion
from policies import presets
from policies.models import Policy

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def editor(client_as):
    return client_as("policy_editor")


def create(client, preset: str, name: str = "", slug: str = ""):
    return client.post("/policies/new/", {"preset": preset, "name": name, "slug": slug, "description": ""})


def handling(policy: Policy) -> dict[str, tuple[str, str]]:
    return {c.code: (c.severity, c.action) for c in policy.draft().categories.all()}


# ----------------------------------------------------------------- severities and actions


def test_the_mlcommons_preset_blocks_child_sexual_exploitation_as_critical(editor, db):
    create(editor, "mlcommons_hazards")
    rows = handling(Policy.objects.get())
    assert rows["S4"] == ("critical", "block")  # Child Sexual Exploitation
    assert rows["S9"] == ("critical", "block")  # Indiscriminate Weapons
    assert rows["S1"] == ("high", "block")  # Violent Crimes
    assert rows["S11"] == ("high", "block")  # Suicide & Self-Harm


def test_the_mlcommons_preset_flags_defamation_and_intellectual_property_at_a_low_severity(editor, db):
    create(editor, "mlcommons_hazards")
    rows = handling(Policy.objects.get())
    assert rows["S5"] == ("low", "flag") and rows["S8"] == ("low", "flag")


def test_a_new_general_policy_does_not_put_every_category_at_medium(editor, db):
    create(editor, "general")
    rows = handling(Policy.objects.get())
    assert len({severity for severity, _ in rows.values()}) >= 3
    assert rows["S1"] == ("high", "block") and rows["S5"] == ("high", "block")
    assert {action for _, action in rows.values()} == {"block", "flag"}


@pytest.mark.parametrize("preset", [p for p in presets.preset_names() if p != "xstest_type"])
def test_every_harm_preset_blocks_something_and_flags_something(preset):
    actions = {action for _, action in presets.preset_handling(preset).values()}
    assert "block" in actions or preset in ("xsafety_scenario",), f"{preset} blocks nothing"
    assert "flag" in actions


def test_benchmark_presets_block_child_safety_as_critical():
    spec = presets.preset_spec("ailuminate_v1_hazard")
    by_name = {c.description.split(" (")[0]: presets.category_handling("ailuminate_v1_hazard", c) for c in spec.categories}
    assert by_name["Child Sexual Exploitation"] == ("critical", "block")
    assert by_name["Non-Violent Crimes"] == ("medium", "flag")
    assert by_name["Violent Crimes"] == ("high", "block")
    openai = presets.preset_handling("openai_moderation")
    assert openai["S3"] == ("critical", "block")  # sexual/minors


# ----------------------------------------------------------------- human names


def test_presets_are_offered_by_human_names(editor, db):
    page = editor.get("/policies/").content.decode()
    assert "JailbreakBench categories (benchmark taxonomy)" in page and "AILuminate v1 hazards" in page
    options = re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', page)
    assert options, "no preset options"
    assert all("_" not in label for _, label in options), options
    assert ("jbb_category", "JailbreakBench categories (benchmark taxonomy)") in options


def test_a_policy_created_from_a_preset_without_a_name_gets_the_presets_human_name(editor, db):
    create(editor, "jbb_category")
    policy = Policy.objects.get()
    assert policy.name == "JailbreakBench categories" and policy.slug == "jailbreakbench-categories"


def test_evaluation_options_are_offered_by_human_names(client_as, db):
    from evaluation.forms import StartEvaluationForm

    form = StartEvaluationForm()
    labels = [label for _, label in form.fields["policy"].choices] + [label for _, label in form.fields["mode"].choices]
    assert "preset: StrongREJECT categories" in labels and "fast (label only)" in labels
    assert not [label for label in labels if re.search(r"[a-z]_[a-z]", label)]


def test_the_console_offers_modes_by_what_they_give(editor, make_policy):
    page = editor.get(f"/policies/{make_policy().slug}/draft/").content.decode()
    assert "fast (label only)" in page and "reason (with an explanation)" in page


# ----------------------------------------------------------------- which model serves a policy


@pytest.fixture
def shipped_production(db, settings) -> ModelVersion:
    """The shipped guard registered as the production model, as ``make demo`` does."""
    return ModelVersion.objects.create(
        name="guardsite-guard-270m", status="production", adapter_path=str(settings.SHIPPED_GUARD_DIR)
    )


def test_the_console_names_models_by_registered_name_and_role_never_a_server_path(editor, make_policy, shipped_production, settings):
    ModelVersion.objects.create(name="sft-job1", status="candidate")
    page = editor.get(f"/policies/{make_policy().slug}/draft/").content.decode()
    assert str(settings.SHIPPED_GUARD_DIR) not in page and "/models/" not in re.sub(r'href="[^"]*"', "", page)
    options = dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', page))
    assert options["embedded"] == "guardsite-guard-270m (production) · deployment default"
    assert options["sft-job1"] == "sft-job1 (candidate)"
    assert "guardsite-guard-270m" not in options, "the default model is listed twice"


def test_a_new_policy_is_served_by_the_production_guard_and_shows_its_name(editor, shipped_production):
    create(editor, "general", name="Kids chat")
    policy = Policy.objects.get()
    assert policy.production_model == shipped_production
    html = editor.get(f"/policies/{policy.slug}/").content.decode()
    served = re.search(r'<dd id="production-model">(.*?)</dd>', html, re.S).group(1)
    assert "guardsite-guard-270m" in served and "production" in served
    assert "Gemma 3 270M" not in served


def test_a_new_policy_follows_a_later_promotion(editor, shipped_production):
    from trainer.registry import promote

    create(editor, "general", name="Kids chat")
    candidate = ModelVersion.objects.create(name="sft-job1")
    promote(candidate, force=True, note="test")
    assert Policy.objects.get().production_model == candidate


def test_a_policy_without_a_model_of_its_own_names_the_deployment_default(editor, make_policy, settings):
    settings.GUARD_MODEL_DIR = "embedded"
    html = editor.get(f"/policies/{make_policy().slug}/").content.decode()
    served = re.search(r'<dd id="production-model">(.*?)</dd>', html, re.S).group(1)
    assert "Gemma 3 270M base (embedded, untrained)" in served and "deployment default" in served


# ----------------------------------------------------------------- unique names


def test_two_policies_cannot_share_a_name_ignoring_case(editor, db):
    create(editor, "general", name="Kids chat")
    response = create(editor, "general", name="KIDS CHAT")
    assert response.status_code == 400
    assert "A policy named &#x27;Kids chat&#x27; already exists" in response.content.decode()
    assert Policy.objects.count() == 1


def test_a_preset_used_twice_without_a_name_asks_for_a_name(editor, db):
    create(editor, "general")
    response = create(editor, "general")
    assert response.status_code == 400
    assert "The preset&#x27;s name is used when the name is empty." in response.content.decode()


def test_renaming_the_draft_to_another_policys_name_is_refused(editor, make_policy):
    make_policy(slug="first")
    second = make_policy(slug="second")
    response = editor.post(f"/policies/{second.slug}/draft/header/", {"name": "FIRST policy", "description": ""}, **HX)
    assert response.status_code == 422 and "already exists" in response.content.decode()


def test_a_policy_keeps_its_own_name_in_another_case(editor, make_policy):
    policy = make_policy(slug="acme")
    response = editor.post(f"/policies/{policy.slug}/draft/header/", {"name": "ACME Policy", "description": ""}, **HX)
    assert response.status_code == 200


def test_importing_a_policy_whose_name_is_taken_is_refused_with_a_clear_error(editor, make_policy):
    make_policy(slug="acme")
    document = {"format": "guardsite.policy/v1", "name": "Acme Policy", "categories": [{"code": "S1", "name": "Violence"}]}
    response = editor.post("/policies/import/", {"text": json.dumps(document), "slug": "acme-2"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "The file was not imported" in page and "<code>name</code>" in page and "already exists" in page
    assert Policy.objects.count() == 1


def test_the_database_refuses_two_policies_with_the_same_name_in_another_case(db):
    Policy.objects.create(slug="a", name="House rules")
    with pytest.raises(IntegrityError), transaction.atomic():
        Policy.objects.create(slug="b", name="house RULES")


def test_the_migration_renames_existing_duplicates_before_adding_the_constraint(transactional_db):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("policies", "0003_policy_explain")], [("policies", "0004_unique_policy_name")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        OldPolicy, OldVersion = old.get_model("policies", "Policy"), old.get_model("policies", "PolicyVersion")
        first = OldPolicy.objects.create(slug="one", name="House rules")
        second = OldPolicy.objects.create(slug="two", name="house rules")
        OldPolicy.objects.create(slug="three", name="House rules (2)")
        OldVersion.objects.create(policy=second, number=None, name="house rules")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        # Read through the migrated state's models: fields added by later migrations are not there yet.
        migrated = executor.loader.project_state(after).apps
        NewPolicy, NewVersion = migrated.get_model("policies", "Policy"), migrated.get_model("policies", "PolicyVersion")
        names = dict(NewPolicy.objects.values_list("slug", "name"))
        assert names == {"one": "House rules", "two": "house rules (3)", "three": "House rules (2)"}
        assert NewVersion.objects.get(policy__slug="two", number__isnull=True).name == "house rules (3)"
        assert NewPolicy.objects.get(pk=first.pk).name == "House rules"
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_an_import_can_be_given_a_name_of_its_own(editor, make_policy):
    make_policy(slug="acme")
    document = {"format": "guardsite.policy/v1", "name": "Acme Policy", "categories": [{"code": "S1", "name": "Violence"}]}
    response = editor.post("/policies/import/", {"text": json.dumps(document), "slug": "acme-2", "name": "Acme for kids"})
    assert response.status_code == 302
    assert Policy.objects.get(slug="acme-2").draft().name == "Acme for kids"


def test_the_demo_default_policy_uses_the_presets_severities_and_actions(db, settings, tmp_path):
    import io

    from django.core.management import call_command

    settings.VAR_DIR = tmp_path  # the demo admin's password file
    call_command("demo_setup", "--no-items", stdout=io.StringIO())
    version = Policy.objects.get(slug="default").latest_version()
    rows = {c.code: (c.severity, c.action) for c in version.categories.all()}
    assert rows == presets.preset_handling("general")
    assert len({severity for severity, _ in rows.values()}) >= 3


def test_evaluation_runs_name_their_policy_for_people(client_as, db):
    from evaluation.models import EvaluationRun

    run = EvaluationRun.objects.create(model="embedded", mode="fast", policy="jbb_category", data=[])
    html = client_as("viewer").get("/evaluations/").content.decode()
    assert "preset: JailbreakBench categories" in html
    assert "preset: JailbreakBench categories" in client_as("viewer").get(f"/evaluations/{run.pk}/").content.decode()
