"""Cold starts: workers and web processes load the production guard before they take traffic (guard/preload.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guard import preload, runtime
from guard.models import ModelVersion
from tests.conftest import REPO, wait_for


@pytest.fixture
def tiny_default(settings, tiny_dir) -> Path:
    settings.GUARD_MODEL_DIR = str(tiny_dir)
    settings.GUARD_BACKEND = "transformers"
    runtime.reset_backends()
    yield tiny_dir
    runtime.reset_backends()


@pytest.mark.parametrize("value, expected", [
    ("workers,web", {"workers", "web"}), ("workers", {"workers"}), (" Web ", {"web"}),
    ("0", set()), ("off", set()), ("", set()), ("1", {"workers", "web"}), ("all", {"workers", "web"}),
])
def test_the_setting_names_where_the_guard_is_preloaded(value, expected):
    assert preload.places(value) == expected


def test_preloading_loads_the_default_guard_so_the_first_request_finds_it_loaded(db, tiny_default):
    assert preload.preload("test") == ["the deployment default"]
    loaded = dict(runtime._backends)
    assert len(loaded) == 1
    runtime.get_backend(None)
    assert runtime._backends == loaded, "the first request loaded another copy"


def test_the_production_models_of_policies_are_preloaded_too(db, tiny_default):
    from policies import presets
    from policies.models import Policy

    model = ModelVersion.objects.create(name="house-guard", status="production", base_model_path=str(tiny_default))
    policy = Policy.create_from_spec(presets.preset_spec("general"), slug="house", preset="general")
    Policy.objects.filter(pk=policy.pk).update(production_model=model)
    assert preload.models_to_preload() == [None, "house-guard"]
    assert preload.preload("test") == ["the deployment default", "house-guard"]


def test_a_model_that_cannot_load_is_skipped_and_the_process_still_starts(db, tiny_default, caplog):
    assert preload.preload("test", models=["no-such-model", None]) == ["the deployment default"]
    assert "no-such-model not loaded: unknown model" in caplog.text


@pytest.mark.worker
@pytest.mark.slow
def test_a_gpu_infer_worker_loads_the_guard_before_its_first_task(start_worker, tiny_dir):
    worker = start_worker("gpu-infer", extra_env={"GUARD_PRELOAD": "workers", "GUARD_MODEL_DIR": str(tiny_dir)})
    wait_for(lambda: "ready in" in worker.log_path.read_text(), timeout=120, message="the worker's preload")
    log = worker.log_path.read_text()
    assert "guard preload (worker process" in log and "the deployment default ready in" in log


@pytest.mark.worker
def test_a_worker_without_the_gpu_infer_queue_loads_nothing(start_worker, tiny_dir):
    worker = start_worker("default", extra_env={"GUARD_PRELOAD": "workers", "GUARD_MODEL_DIR": str(tiny_dir)})
    time.sleep(2)
    assert "guard preload" not in worker.log_path.read_text()


@pytest.mark.slow
def test_each_gunicorn_web_worker_loads_the_guard_before_it_serves(transactional_db, tiny_dir, tmp_path):
    from tests.conftest import _database_url_for_test_db

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": _database_url_for_test_db(), "GUARD_PRELOAD": "web", "GUARD_MODEL_DIR": str(tiny_dir)}
    log = tmp_path / "gunicorn.log"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with log.open("w") as out:
        process = subprocess.Popen([gunicorn, "guardsite.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready in" in log.read_text() or process.poll() is not None, timeout=120, message="gunicorn's preload")
        assert "guard preload (web worker" in log.read_text(), log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
