"""Model resolution and per-process backends (guard.runtime)."""

from __future__ import annotations

import json

import pytest

from guard import embedded, runtime
from guard.backends.base import GuardError, GuardRequest
from guard.models import ModelVersion


@pytest.fixture(autouse=True)
def fresh_backends():
    runtime.reset_backends()
    yield
    runtime.reset_backends()


def write_adapter(directory, base: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))


@pytest.mark.parametrize("name", [None, "", "embedded"])
def test_embedded_names_resolve_to_the_prepared_embedded_model(name, settings):
    settings.GUARD_MODEL_DIR = ""
    resolved = runtime.resolve_model(name)
    assert resolved.label == "embedded"
    assert resolved.base_path == embedded.cached_model_dir()
    assert resolved.adapter_path is None


def test_the_model_dir_setting_is_the_default(settings, tiny_dir):
    settings.GUARD_MODEL_DIR = str(tiny_dir)
    assert runtime.resolve_model(None).base_path == tiny_dir
    # Naming "embedded" explicitly still means the embedded model.
    assert runtime.resolve_model("embedded").base_path == embedded.cached_model_dir()


def test_a_model_directory_resolves_to_itself(tiny_dir):
    resolved = runtime.resolve_model(str(tiny_dir))
    assert resolved.base_path == tiny_dir and resolved.adapter_path is None


def test_an_adapter_directory_resolves_to_its_base(tmp_path, tiny_dir):
    write_adapter(tmp_path / "a", str(tiny_dir))
    resolved = runtime.resolve_model(str(tmp_path / "a"))
    assert resolved.base_path == tiny_dir
    assert resolved.adapter_path == (tmp_path / "a").resolve()


def test_an_adapter_may_name_the_embedded_base(tmp_path):
    write_adapter(tmp_path / "a", "embedded")
    assert runtime.resolve_model(str(tmp_path / "a")).base_path == embedded.cached_model_dir()


def test_an_adapter_whose_base_is_missing_is_a_clear_error(tmp_path):
    write_adapter(tmp_path / "a", str(tmp_path / "nowhere"))
    with pytest.raises(GuardError, match="base model directory"):
        runtime.resolve_model(str(tmp_path / "a"))


def test_a_directory_that_is_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(GuardError, match="neither config.json"):
        runtime.resolve_model(str(tmp_path))


@pytest.mark.django_db
def test_an_unknown_name_is_a_clear_error():
    with pytest.raises(GuardError, match="unknown model 'no-such-model'"):
        runtime.resolve_model("no-such-model")


@pytest.mark.django_db
def test_a_model_version_resolves_to_its_base_adapter_and_temperature(tmp_path, tiny_dir):
    write_adapter(tmp_path / "a", str(tiny_dir))
    ModelVersion.objects.create(
        name="tiny-v1",
        base_model_path=str(tiny_dir),
        adapter_path=str(tmp_path / "a"),
        metrics={"calibration": {"temperature": 1.7}},
    )
    resolved = runtime.resolve_model("tiny-v1")
    assert resolved.label == "tiny-v1"
    assert resolved.base_path == tiny_dir
    assert resolved.adapter_path == tmp_path / "a"
    assert resolved.temperature == 1.7


@pytest.mark.django_db
def test_a_model_version_on_the_embedded_base_without_adapter():
    ModelVersion.objects.create(name="base-v0")
    resolved = runtime.resolve_model("base-v0")
    assert resolved.base_path == embedded.cached_model_dir() and resolved.adapter_path is None
    assert resolved.temperature is None


@pytest.mark.django_db
def test_a_model_version_whose_adapter_vanished_is_a_clear_error(tmp_path):
    ModelVersion.objects.create(name="gone-v1", adapter_path=str(tmp_path / "deleted"))
    with pytest.raises(GuardError, match="gone-v1.*adapter directory"):
        runtime.resolve_model("gone-v1")


def test_the_backend_is_loaded_once_per_process(settings, tiny_dir):
    settings.GUARD_BACKEND = "transformers"
    first = runtime.get_backend(str(tiny_dir))
    assert runtime.get_backend(str(tiny_dir)) is first


def test_classify_uses_the_configured_model(settings, tiny_dir, policy):
    settings.GUARD_BACKEND = "transformers"
    settings.GUARD_MODEL_DIR = str(tiny_dir)
    verdicts = runtime.classify([GuardRequest(policy, "hi"), GuardRequest(policy, "hello", "hi!")])
    assert [v.response_label is None for v in verdicts] == [True, False]
    assert runtime.classify([]) == []


def test_an_unknown_backend_setting_is_a_clear_error(settings):
    settings.GUARD_BACKEND = "tensorrt"
    with pytest.raises(GuardError, match="unknown GUARD_BACKEND 'tensorrt'"):
        runtime.get_backend()


def test_the_vllm_backend_without_vllm_says_how_to_get_it(settings, tiny_dir):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    settings.GUARD_BACKEND = "vllm"
    with pytest.raises(GuardError, match=r"vLLM, which is not installed.*gpu"):
        runtime.get_backend(str(tiny_dir))


def test_the_openai_backend_needs_a_base_url(settings):
    settings.GUARD_BACKEND = "openai"
    settings.GUARD_OPENAI_BASE_URL = ""
    with pytest.raises(GuardError, match="GUARD_OPENAI_BASE_URL"):
        runtime.get_backend()
