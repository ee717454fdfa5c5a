"""Guard fixtures: the tiny random model (plumbing), the embedded model (real runs),
a real ``guard_serve`` subprocess (OpenAI-compatible server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.contract import CategorySpec, PolicySpec

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
