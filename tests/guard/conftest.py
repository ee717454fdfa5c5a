"""Guard fixtures: the tiny random model (plumbing), the embedded model (real runs),
a real ``guard_serve`` subprocess (OpenAI-compatible server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from guard.contract import CategorySpec, PolicySpec
from guard.testing import TINY_SAFE, TINY_UNSAFE

REPO = Path(__file__).resolve().parents[2]

POLICY = PolicySpec(
    name="Test policy",
    categories=(
        CategorySpec("S1", "Weapons", "Helps build weapons or explosives."),
        CategorySpec("S2", "Fraud", "Helps commit fraud or scams."),
        CategorySpec("S10", "Hate", "Demeans people for who they are."),
    ),
)


@pytest.fixture(scope="session")
def policy() -> PolicySpec:
    return POLICY


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from guard.testing import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_backend(tiny_dir):
    from guard.backends.transformers_backend import TransformersBackend

    # A short explanation budget: the random model never stops by itself.
    return TransformersBackend(tiny_dir, device="cpu", max_new_tokens=6, max_input_tokens=512)


@pytest.fixture(scope="session")
def embedded_backend():
    from guard import embedded
    from guard.backends.transformers_backend import TransformersBackend

    return TransformersBackend(embedded.prepare(), device="cpu", max_new_tokens=24)


class ServerProcess:
    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_guard_serve(model: str, timeout: float = 180.0, extra_env: dict[str, str] | None = None) -> ServerProcess:
    """``manage.py guard_serve --port 0`` as a subprocess; waits for its 'listening' line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "guard_serve", "--host", "127.0.0.1", "--port", "0", "--model", model],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError(f"guard_serve exited with {process.returncode}")
            continue
        if "listening on" in line:
            url = line.split("listening on", 1)[1].split()[0]
            return ServerProcess(process, url)
    process.kill()
    raise RuntimeError("guard_serve did not start in time")


@pytest.fixture
def serve_guard() -> Iterator:
    """Start ``guard_serve`` subprocesses for one test; they are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(model: str, **kwargs: object) -> ServerProcess:
        server = start_guard_serve(model, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_server(tiny_dir) -> Iterator[ServerProcess]:
    server = start_guard_serve(str(tiny_dir), extra_env={"GUARD_MAX_NEW_TOKENS": "8"})
    yield server
    server.stop()


# ----------------------------------------------------------------- tuned layers and peak heads on a six-layer model

TUNED_PROMPTS = [*TINY_UNSAFE, *TINY_SAFE]
TUNED_GOLD = np.array([True] * len(TINY_UNSAFE) + [False] * len(TINY_SAFE))
TUNED_TRAIN = [i for i in range(len(TUNED_PROMPTS)) if i % 4]  # both labels on both sides
TUNED_VAL = [i for i in range(len(TUNED_PROMPTS)) if not i % 4]


@pytest.fixture(scope="module")
def six_layer_backend():
    """A tiny random Gemma 3 of six layers (five sliding-window, one global): room for a tuned copy of two."""
    from guard.backends.transformers_backend import TransformersBackend
    from guard.testing import tiny_model_dir

    return TransformersBackend(tiny_model_dir(layers=6), device="cpu", max_new_tokens=4, max_input_tokens=256)


@pytest.fixture(scope="module")
def tuned(six_layer_backend):
    """Layers 4-5 of ``six_layer_backend`` tuned for two epochs on the tiny prompts: (layer-4 residuals, result)."""
    from guard.features import FeatureExtractor
    from guard.layer_tuning import prompt_residuals, tune_prompt_layers

    extractor = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer)
    residuals = prompt_residuals(extractor, TUNED_PROMPTS, 4)
    result = tune_prompt_layers(six_layer_backend.model.get_decoder(), residuals, TUNED_TRAIN, TUNED_GOLD[TUNED_TRAIN],
                                TUNED_VAL, TUNED_GOLD[TUNED_VAL], cut=4, top=6, epochs=2, log=lambda line: None)
    return residuals, result


@pytest.fixture
def tuned_heads_dir(six_layer_backend, tuned, tmp_path):
    """Tiny heads whose prompt head reads the tuned layers, saved in ``tmp_path``."""
    from guard.heads import ProbeHead
    from guard.testing import fit_tiny_heads

    _, result = tuned
    heads = fit_tiny_heads(six_layer_backend, tmp_path)
    heads.tuned = result.weights
    heads.layout = heads.layout.with_tuned((4, 6))
    heads.prompt = ProbeHead(source="prompt", blocks="tuned", mean=result.mean, scale=result.scale, coef=result.coef,
                             bias=result.bias, threshold=0.5, kind="tuned layers 4-5 + linear")
    heads.save(tmp_path)
    return tmp_path
