"""A throwaway production-like stack for fault tests and benchmarks.

Its own PostgreSQL cluster and Redis server on free ports (never the shared
ones: they are restarted and killed here), the API under gunicorn and Celery
workers as subprocesses pointed at them. Used by tests/ops/test_faults.py and
bench/faults.py.

    stack = Stack().start()          # initdb + redis-server + migrate + seed
    api = stack.start_api()           # gunicorn on loopback
    worker = stack.start_worker()     # celery worker -B on all queues (tiny model)
    stack.postgres.restart(); stack.redis.restart()
    stack.stop()

``python -m tests.ops.stack seed`` (with DATABASE_URL set) creates the policy and
API key the stack uses and prints the key.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
POLICY = "faults"
# The database user of the throwaway cluster (trust authentication on loopback only).
DB_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")


def wait_until(condition, timeout: float, what: str, interval: float = 0.2) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory (as user postgres when run as root)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="guardsite-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.bindir = postgres_bindir()
        self.as_postgres = os.geteuid() == 0

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}\n{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> ThrowawayPostgres:
        if not self.data.exists():
            if self.as_postgres:
                shutil.chown(self.root, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions and disconnect clients (a service restart);
        ``immediate``: no clean shutdown at all (a crash; recovery on next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def is_up(self) -> bool:
        return self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server without persistence: a restart loses every queued message."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> ThrowawayRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(self.is_up, 20, f"redis on port {self.port}")
        return self

    def is_up(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def queued_messages(self, queue: str) -> int:
        import redis

        return int(redis.Redis(port=self.port).llen(queue))

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@dataclass
class Process:
    """A subprocess in its own session (so its children die with it) with a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> Process:
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_hard(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
            self.process.wait(10)  # type: ignore[union-attr]

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
            try:
                self.process.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill_hard()
        if hasattr(self, "_log"):
            self._log.close()


@dataclass
class Stack:
    """PostgreSQL + Redis + (on demand) gunicorn and workers, all on loopback and throwaway."""

    database: str = "guardsite_faults"
    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: ThrowawayPostgres = field(default_factory=ThrowawayPostgres)
    redis: ThrowawayRedis = field(default_factory=ThrowawayRedis)
    processes: list[Process] = field(default_factory=list)
    secret: str = ""
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="guardsite-stack-")))

    def tiny_model(self) -> str:
        """The tiny random guard model's directory (made once; needs Django settings, hence a subprocess)."""
        if not getattr(self, "_tiny", ""):
            code = "import django; django.setup(); from guard.testing import tiny_model_dir; print(tiny_model_dir())"
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
            env.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")
            result = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=600)
            self._tiny = result.stdout.strip().splitlines()[-1]
        return self._tiny

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_ALLOW_ASYNC"))}
        env.update(
            DATABASE_URL=self.postgres.url(self.database),
            CELERY_BROKER_URL=self.redis.url(0),
            DJANGO_SETTINGS_MODULE="guardsite.settings",
            DEBUG="0",
            SECRET_KEY="throwaway-stack-" + "x" * 40,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            GUARD_MODEL_DIR=self.tiny_model(),
            GUARDSITE_VAR_DIR=str(self.logs / "var"),
            LOG_LEVEL="WARNING",
            # Quick recovery so the tests stay short: leases of a few seconds, stale after 3 s.
            MODERATION_LEASE_SECONDS="8",
            MODERATION_STALE_PENDING_SECONDS="3",
            MODERATION_QC_SAMPLE_RATE="0",
            MODERATION_DOUBLE_REVIEW_RATE="0",
            MODERATION_MICRO_BATCH_WAIT_MS="0",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def start(self) -> Stack:
        env = self.env()  # first: it may fail (model preparation) before anything runs
        try:
            self.postgres.start()
            self.redis.start()
            self.postgres.create_database(self.database)
            subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True, timeout=600)
            seeded = subprocess.run(
                [PYTHON, "-m", "tests.ops.stack", "seed"], cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=300
            )
        except BaseException:
            self.stop()  # never leave a cluster or a Redis server behind
            raise
        self.secret = seeded.stdout.strip().splitlines()[-1]
        return self

    # ----------------------------------------------------------------- processes

    def start_api(self, workers: int = 2, threads: int = 4, **env: str) -> ApiServer:
        port = free_port()
        argv = [
            GUNICORN, "guardsite.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", str(threads), "--timeout", "120",
        ]
        process = Process("gunicorn", argv, self.env(**env), self.logs / f"gunicorn-{port}.log").start()
        self.processes.append(process)
        server = ApiServer(process, f"http://127.0.0.1:{port}", self.secret)
        wait_until(server.healthy, 90, "gunicorn /healthz", interval=0.3)
        return server

    def start_worker(self, queues: str = "default,gpu-infer,gpu-train", beat: bool = True, **env: str) -> Process:
        name = f"faults{len(self.processes)}@%h"
        argv = [PYTHON, "-m", "celery", "-A", "guardsite", "worker", "-Q", queues, "-c", "1", "-P", "prefork",
                "--without-gossip", "--without-mingle", "-l", "INFO", "-n", name]
        if beat:
            argv += ["-B", "-s", str(self.logs / f"beat-{len(self.processes)}")]
        process = Process("worker", argv, self.env(**env), self.logs / f"worker-{len(self.processes)}.log").start()
        self.processes.append(process)
        wait_until(lambda: "ready." in process.output() or not process.alive(), 90, "the worker to be ready")
        if not process.alive():
            raise RuntimeError(f"worker exited:\n{process.output()}")
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.redis.stop()
        self.postgres.destroy()

    # ----------------------------------------------------------------- database checks

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.postgres.url(self.database), connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    def outcome(self, ids: list[int]) -> Outcome:
        rows = self.query(
            "SELECT i.status, count(*), count(v.id) FROM moderation_item i "
            "LEFT JOIN moderation_verdict v ON v.item_id = i.id WHERE i.id = ANY(%s) GROUP BY i.status",
            (ids,),
        )
        by_status = {status: n for status, n, _ in rows}
        verdicts = sum(v for _, _, v in rows)
        duplicates = self.query(
            "SELECT count(*) FROM (SELECT item_id FROM moderation_verdict WHERE item_id = ANY(%s) "
            "GROUP BY item_id HAVING count(*) > 1) d",
            (ids,),
        )[0][0]
        return Outcome(accepted=len(set(ids)), found=sum(by_status.values()), by_status=by_status, verdicts=verdicts, duplicates=duplicates)

    def wait_all_done(self, ids: list[int], timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        outcome = self.outcome(ids)
        while time.monotonic() < deadline and outcome.by_status.get("done", 0) < outcome.accepted:
            time.sleep(0.5)
            outcome = self.outcome(ids)
        return outcome


@dataclass
class Outcome:
    accepted: int
    found: int
    by_status: dict[str, int]
    verdicts: int
    duplicates: int

    @property
    def lost(self) -> int:
        return self.accepted - self.found

    @property
    def all_done_once(self) -> bool:
        return self.lost == 0 and self.by_status.get("done", 0) == self.accepted and self.verdicts == self.accepted and not self.duplicates


@dataclass
class ApiServer:
    process: Process
    url: str
    secret: str

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {self.secret}"})

    def submit(self, client: httpx.Client, prompts: list[str], idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"policy": POLICY, "mode": "fast", "items": [{"prompt": p} for p in prompts]}
        return client.post("/api/v1/items", content=json.dumps(body), headers={"Content-Type": "application/json", **headers})


class Submitter(threading.Thread):
    """A well-behaved client: batches of 3 with an Idempotency-Key; on 503 it waits and
    retries the same request (same key), so a retry can never create a second batch."""

    def __init__(self, api: ApiServer, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.api = api
        self.halt = threading.Event()
        self.accepted: list[int] = []
        self.answers: list[tuple[float, int, str | None]] = []  # (when, status, Retry-After)
        self.unexpected: list[str] = []

    def run(self) -> None:
        with self.api.client(timeout=30) as client:
            number = 0
            while not self.halt.is_set():
                key = f"{self.name}-{number}"
                prompts = [f"{self.name} request {number} item {i}: how do I sharpen a knife?" for i in range(3)]
                give_up = time.monotonic() + 90
                while time.monotonic() < give_up:  # a started request is seen through, even after halt
                    try:
                        response = self.api.submit(client, prompts, key)
                    except httpx.HTTPError as error:
                        self.answers.append((time.monotonic(), 0, None))
                        self.unexpected.append(f"{key}: {error!r}")
                        time.sleep(0.3)
                        continue
                    self.answers.append((time.monotonic(), response.status_code, response.headers.get("Retry-After")))
                    if response.status_code == 202:
                        self.accepted.extend(response.json()["ids"])
                        break
                    if response.status_code == 503:
                        time.sleep(0.3)  # a real client would honour Retry-After; the test is impatient
                        continue
                    self.unexpected.append(f"{key}: {response.status_code} {response.text[:300]}")
                    break
                number += 1
                time.sleep(0.05)


def run_submitters(api: ApiServer, prefix: str, count: int = 3) -> list[Submitter]:
    submitters = [Submitter(api, f"{prefix}{n}") for n in range(count)]
    for submitter in submitters:
        submitter.start()
    return submitters


def halt(submitters: list[Submitter]) -> None:
    for submitter in submitters:
        submitter.halt.set()
    for submitter in submitters:
        submitter.join(120)


def accepted(submitters: list[Submitter]) -> list[int]:
    return [i for s in submitters for i in s.accepted]


def seed() -> str:
    """The stack's policy (two categories) and an API key without a practical rate limit."""
    import django

    django.setup()
    from moderation import keys
    from policies.models import Category, Policy

    policy = Policy.objects.create(slug=POLICY, name="Fault tests")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="S1", name="Weapons", description="Making or using weapons.", action="block")
    Category.objects.create(version=draft, position=1, code="S2", name="Hate", description="Attacks on protected groups.", action="flag")
    policy.publish(change_note="fault tests")
    _, secret = keys.create_key("faults", rate_limit_per_minute=10**9)
    return secret


if __name__ == "__main__":
    if sys.argv[1:] == ["seed"]:
        print(seed())
    else:
        raise SystemExit("usage: python -m tests.ops.stack seed")
