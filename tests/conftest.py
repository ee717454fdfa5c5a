"""Shared fixtures: real PostgreSQL (pytest-django test database), real Redis,
real Celery worker processes and real headless Chromium.

``make test`` points DATABASE_URL at PostgreSQL and CELERY_BROKER_URL at Redis;
``.ci/run`` starts both (installing them with apt where missing).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from guardsite.roles import ALL_ROLES

REPO = Path(__file__).resolve().parent.parent
# Playwright's sync API runs an event loop in the test thread; Django's ORM
# would otherwise refuse to be called from it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# Worker and gunicorn processes the tests start load the guard when a test needs it, not at boot
# (guard/preload.py; the preload tests turn it on for their own processes).
os.environ.setdefault("GUARD_PRELOAD", "0")
# A training job judges the policy-following pairs with its candidate and with the baseline, here the real
# 270M base by its label logits (144 verdicts: most of a minute a job on 2 cores): two pairs show the plumbing.
# The environment reaches the worker processes the tests start; ``few_policy_following_pairs`` this one.
EVAL_POLICY_FOLLOWING_PAIRS = 2
os.environ.setdefault("TRAINER_EVAL_POLICY_FOLLOWING_PAIRS", str(EVAL_POLICY_FOLLOWING_PAIRS))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# ----------------------------------------------------------------- users & roles


@pytest.fixture(autouse=True)
def fast_password_hasher(settings) -> None:
    """Tests create and sign in many users; the production hasher costs seconds each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def few_policy_following_pairs(settings) -> None:
    """Django read its settings before this module set the environment (see ``EVAL_POLICY_FOLLOWING_PAIRS``)."""
    settings.TRAINER_EVAL_POLICY_FOLLOWING_PAIRS = EVAL_POLICY_FOLLOWING_PAIRS


@pytest.fixture
def make_user(db) -> Callable[..., User]:
    def make(username: str, *roles: str, password: str = "pw-for-tests-1") -> User:
        user = User.objects.create_user(username=username, password=password)
        for role in roles:
            group, _ = Group.objects.get_or_create(name=role)
            user.groups.add(group)
        return user

    return make


@pytest.fixture
def role_users(make_user) -> dict[str, User]:
    return {role: make_user(f"{role}-user", role) for role in ALL_ROLES}


@pytest.fixture
def client_as(client, role_users) -> Callable:
    """``client_as("reviewer")`` -> the Django test client signed in with that role."""

    def sign_in(role: str):
        client.force_login(role_users[role])
        return client

    return sign_in


# ----------------------------------------------------------------- Celery worker


def _database_url_for_test_db() -> str:
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    name = connection.settings_dict["NAME"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{name}"
    auth = db["USER"] or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"


class WorkerProcess:
    """A real ``celery worker`` subprocess on the test database and broker."""

    def __init__(self, queues: str, concurrency: int = 1, extra_env: dict[str, str] | None = None, pool: str = "prefork") -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.pool = pool
        self.process: subprocess.Popen | None = None
        self.log_path = REPO / "test-artifacts" / f"worker-{os.getpid()}-{time.monotonic_ns()}.log"

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env["DATABASE_URL"] = _database_url_for_test_db()
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "guardsite", "worker", "-Q", self.queues, "-c", str(self.concurrency),
             "-P", self.pool, "--without-gossip", "--without-mingle", "-l", "INFO", "-n", f"test{time.monotonic_ns()}@%h"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in 60s:\n{self.log_path.read_text()}")

    def child_pids(self) -> list[int]:
        assert self.process
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_hard(self) -> None:
        """SIGKILL the whole worker (parent and children), as an OOM-killer would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        if hasattr(self, "log"):
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def purge_broker() -> None:
    from guardsite.celery import app

    app.control.purge()


@pytest.fixture
def start_worker(transactional_db, purge_broker) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; all are stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(queues: str = "default,gpu-infer,gpu-train", **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(queues, **kwargs).start()  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(condition: Callable[[], object], timeout: float = 60, interval: float = 0.2, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")


# ----------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (apt-get install chromium); .ci/run installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def signed_in_page(browser, live_server, make_user) -> Callable:
    """``signed_in_page("policy_editor")`` -> a Playwright page signed in with that role."""
    pages = []

    def open_page(*roles: str, username: str | None = None):
        name = username or f"{'-'.join(roles) or 'plain'}-browser"
        make_user(name, *roles)
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto("/accounts/login/")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", "pw-for-tests-1")
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login" not in url)
        pages.append(context)
        return page

    yield open_page
    for context in pages:
        context.close()
