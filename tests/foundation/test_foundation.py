"""The skeleton every capability stands on: auth everywhere, roles, health, real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from guardsite.roles import ALL_ROLES
from ops.models import WorkerHeartbeat
from ops.tasks import heartbeat
from tests.conftest import REPO, wait_for


def test_the_four_roles_exist_after_migrate(db):
    assert set(Group.objects.values_list("name", flat=True)) >= set(ALL_ROLES)


def test_pages_redirect_anonymous_visitors_to_sign_in(client):
    response = client.get("/policies/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_sign_in_page_is_public(client, db):
    assert client.get("/accounts/login/").status_code == 200


def test_healthz_reports_ok_when_database_answers(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.worker
def test_a_task_runs_in_a_real_worker_process_through_redis(start_worker):
    start_worker(queues="default")
    heartbeat.apply_async(kwargs={"label": "through-redis"}, queue="default")
    row = wait_for(lambda: WorkerHeartbeat.objects.filter(hostname="through-redis").first(), timeout=60)
    assert row.pid != os.getpid()


def test_guard_model_prepare_reuses_its_cache(tmp_path):
    """`guard_model prepare` is idempotent: the second run comes from the sha256-keyed cache."""
    run = subprocess.run(
        [sys.executable, "manage.py", "guard_model", "prepare"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    path = Path(run.stdout.strip())
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert "reused cache" in run.stderr


@pytest.mark.worker
def test_embedded_configuration_runs_with_sqlite_and_a_filesystem_broker(tmp_path):
    """Nothing but Python: SQLite, kombu's filesystem transport and a real worker process."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["GUARDSITE_VAR_DIR"] = str(tmp_path)
    manage = [sys.executable, "manage.py"]
    migrate = subprocess.run([*manage, "migrate", "--noinput"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "guardsite", "worker", "-Q", "default", "-c", "1", "--without-gossip", "--without-mingle", "-l", "INFO"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        send = (
            "import django; django.setup();"
            "from ops.tasks import heartbeat; heartbeat.apply_async(kwargs={'label': 'embedded'}, queue='default')"
        )
        subprocess.run([sys.executable, "-c", send], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "guardsite.settings"}, check=True, timeout=120)
        check = (
            "import django; django.setup();"
            "from ops.models import WorkerHeartbeat; print(WorkerHeartbeat.objects.filter(hostname='embedded').count())"
        )

        def heartbeat_recorded() -> bool:
            out = subprocess.run([sys.executable, "-c", check], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "guardsite.settings"}, capture_output=True, text=True)
            return out.stdout.strip() == "1"

        wait_for(heartbeat_recorded, timeout=90, interval=1, message="heartbeat through the filesystem broker")
        assert (tmp_path / "guardsite.sqlite3").exists()
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)


SQLITE_PAGES_SCRIPT = """
import django; django.setup()
from django.contrib.auth.models import User
from django.test import Client
from policies.models import Policy
from moderation.models import Item, Verdict
user = User.objects.create_superuser("smoke", password="pw-for-tests-1")
policy = Policy.objects.get(slug="default")
item = Item.objects.create(policy_version=policy.latest_version(), prompt="<b>hi</b>", status="done")
Verdict.objects.create(item=item, prompt_label="unsafe", categories=["S1"], action="block", explanation="x")
client = Client(raise_request_exception=True)
client.force_login(user)
for url in ["/", "/?window=7d", "/items/", f"/items/{item.pk}/", "/review/", "/policies/", "/policies/default/",
            "/models/", "/training/", "/evaluations/", "/api-keys/"]:
    status = client.get(url).status_code
    assert status == 200, (url, status)
print("pages ok")
"""


def test_every_main_page_renders_on_the_embedded_sqlite_configuration(tmp_path):
    """The embedded setup is SQLite: raw SQL and JSON queries must work there too."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["GUARDSITE_VAR_DIR"] = str(tmp_path)
    env["DJANGO_SETTINGS_MODULE"] = "guardsite.settings"
    for command in (["migrate", "--noinput"], ["demo_setup", "--no-items"]):
        done = subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    run = subprocess.run([sys.executable, "-c", SQLITE_PAGES_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pages ok" in run.stdout


def _django_error_from(driver_error: Exception) -> Exception:
    """The exception Django raises for ``driver_error``: its own class, the driver's as cause."""
    from django.db import connection

    try:
        with connection.wrap_database_errors:
            raise driver_error
    except Exception as wrapped:  # noqa: BLE001 - that is the point
        return wrapped
    raise AssertionError("not wrapped")


def test_connection_lost_at_the_end_of_a_restart_is_an_outage_although_the_database_answers_again(transactional_db):
    import psycopg

    from guardsite.errors import database_answers, database_is_down

    assert database_answers()  # the race: by the time the error is handled, the database is back
    lost = _django_error_from(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert database_is_down(lost)


def test_server_shutting_down_is_an_outage(db):
    import psycopg.errors

    from guardsite.errors import database_is_down

    assert database_is_down(_django_error_from(psycopg.errors.AdminShutdown("terminating connection due to administrator command")))


def test_sql_mistake_while_the_database_answers_is_not_an_outage(db):
    import psycopg.errors

    from guardsite.errors import database_is_down

    assert not database_is_down(_django_error_from(psycopg.errors.UndefinedTable('relation "nope" does not exist')))
