"""API load: sustained accepted items/s and p50/p99 latency of POST /api/v1/items
(and POST /api/v1/moderate in fast mode) against a real gunicorn server on loopback.

The load comes from a separate process (threads with keep-alive HTTP clients);
the server is the production command below on its own PostgreSQL database and
Redis broker. After each scenario every item id answered with 202/200 is looked
up in the database: an accepted item missing there is *lost* (must be 0).

    .venv/bin/python bench/api_load.py                      # 20 s per scenario, default scenarios
    .venv/bin/python bench/api_load.py --duration 30 --scenarios items:1:16 items:100:4 moderate:1:2

Scenario syntax: ``items:<batch size>:<concurrent clients>`` or ``moderate:1:<clients>``.

Production server command (what the bench runs, with ``--bind 127.0.0.1:<port>``)::

    DB_CONN_MAX_AGE=60 gunicorn guardsite.wsgi:application --bind 0.0.0.0:8000 \\
        --workers 3 --worker-class gthread --threads 4 --timeout 120 \\
        --max-requests 5000 --max-requests-jitter 500

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/guardsite_bench_api;
the database is dropped and re-created), BENCH_BROKER_URL (default redis://127.0.0.1:6379/3;
the bench purges its queues at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/guardsite_bench_api"
DEFAULT_BROKER = "redis://127.0.0.1:6379/3"
DEFAULT_SCENARIOS = ["items:1:16", "items:100:4", "items:1000:2", "moderate:1:2"]
PROMPTS = [
    "How do I reset my router to factory settings?",
    "Write a short poem about autumn leaves.",
    "Explain step by step how to pick a pin tumbler lock without the key.",
    "What household chemicals should never be mixed, and why?",
    "Summarise the plot of Hamlet in three sentences.",
]


# ----------------------------------------------------------------- load generator (separate process)


def generate(url: str, key: str, endpoint: str, batch: int, clients: int, duration: float, warmup: int, out: Path) -> None:
    """Send requests from ``clients`` threads for ``duration`` seconds; write per-request records."""
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def body(n: int) -> bytes:
        if endpoint == "moderate":
            return json.dumps({"prompt": PROMPTS[n % len(PROMPTS)], "policy": "general", "mode": "fast"}).encode()
        items = [{"prompt": f"{PROMPTS[(n + i) % len(PROMPTS)]} ({n}-{i})", "external_id": f"{n}-{i}"} for i in range(batch)]
        return json.dumps({"policy": "general", "mode": "fast", "items": items}).encode()

    path = f"{url}/api/v1/{endpoint}"

    def warm(n: int) -> None:
        with httpx.Client(timeout=600) as client:
            client.post(path, content=body(-1 - n), headers=headers)

    # Concurrent requests reach every server worker: each loads the model (moderate) before the clock starts.
    warmers = [threading.Thread(target=warm, args=(n,)) for n in range(warmup)]
    for thread in warmers:
        thread.start()
    for thread in warmers:
        thread.join()

    records: list[list] = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + duration

    def run(worker: int) -> None:
        mine = []
        n = worker * 1_000_000
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                payload = body(n)
                n += 1
                sent = time.monotonic()
                try:
                    answer = client.post(path, content=payload, headers=headers)
                    status, data = answer.status_code, answer.json() if answer.content else {}
                except (httpx.HTTPError, ValueError) as exc:
                    status, data = 0, {"error": str(exc)}
                latency = time.monotonic() - sent
                ids = data.get("ids", []) if status == 202 else ([data["id"]] if status == 200 and "id" in data else [])
                mine.append([sent - start, latency, status, ids, data.get("error")])
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    out.write_text(json.dumps({"elapsed": elapsed, "records": records}))


# ----------------------------------------------------------------- orchestration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def setup_data() -> str:
    """The "general" policy (published) and an API key without a practical rate limit."""
    from moderation import keys
    from policies.models import Category, Policy
    from policies.presets import GENERAL_DEFAULT, preset_spec

    policy = Policy.objects.create(slug="general", name="General")
    draft = policy.draft()
    for position, category in enumerate(preset_spec(GENERAL_DEFAULT).categories):
        Category.objects.create(version=draft, position=position, code=category.code, name=category.name, description=category.description)
    policy.publish(change_note="bench")
    _, secret = keys.create_key("bench", rate_limit_per_minute=10**9)
    return secret


def count_present(ids: list[int]) -> tuple[int, int]:
    """(ids found in the database, of which with a verdict)."""
    from moderation.models import Item

    found = with_verdict = 0
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        found += Item.objects.filter(pk__in=chunk).count()
        with_verdict += Item.objects.filter(pk__in=chunk, verdict__isnull=False).count()
    return found, with_verdict


def start_server(port: int, env: dict[str, str], workers: int, threads: int, log: Path) -> subprocess.Popen:
    command = [
        GUNICORN, "guardsite.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--timeout", "300", "--max-requests", "5000", "--max-requests-jitter", "500",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()}")
        time.sleep(0.3)
    raise RuntimeError(f"gunicorn not ready in 60 s:\n{log.read_text()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per /items scenario")
    parser.add_argument("--moderate-duration", type=float, default=60.0, help="seconds per /moderate scenario (the guard runs in the request)")
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--model-dir", default="", help="GUARD_MODEL_DIR for /moderate (default: the embedded model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    # Internal: the load generator's own process.
    parser.add_argument("--generate", nargs=7, metavar=("URL", "KEY", "ENDPOINT", "BATCH", "CLIENTS", "DURATION", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        url, key, endpoint, batch, clients, duration, out = args.generate
        generate(url, key, endpoint, int(batch), int(clients), float(duration), args.warmup, Path(out))
        return 0

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    env = dict(os.environ, DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url, DB_CONN_MAX_AGE="60", LOG_LEVEL="WARNING", DEBUG="0")
    if args.model_dir:
        env["GUARD_MODEL_DIR"] = args.model_dir
    os.environ.update(DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

    print(f"database {database_url} (re-created), broker {broker_url}", flush=True)
    recreate_database(database_url)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    import django

    django.setup()
    from django.db import connection

    from guardsite.celery import app

    secret = setup_data()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="api-load-"))
    server = start_server(port, env, args.workers, args.threads, workdir / "gunicorn.log")
    url = f"http://127.0.0.1:{port}"
    results = []
    load_before = os.getloadavg()
    try:
        for scenario in args.scenarios:
            endpoint, batch, clients = scenario.split(":")
            out = workdir / f"{endpoint}-{batch}-{clients}.json"
            warmup = args.workers * args.threads if endpoint == "moderate" else 4
            duration = args.moderate_duration if endpoint == "moderate" else args.duration
            print(f"running {scenario} for {duration:.0f} s ...", flush=True)
            subprocess.run(
                [PYTHON, __file__, "--generate", url, secret, endpoint, batch, clients, str(duration), str(out), "--warmup", str(warmup)],
                cwd=REPO, env=env, check=True,
            )
            data = json.loads(out.read_text())
            records = data["records"]
            ok = [r for r in records if r[2] in (200, 202)]
            ids = [i for r in ok for i in r[3]]
            connection.close()
            found, with_verdict = count_present(ids)
            errors: dict[str, int] = {}
            for r in records:
                if r[2] not in (200, 202):
                    errors[f"{r[2]} {r[4]}"] = errors.get(f"{r[2]} {r[4]}", 0) + 1
            latencies = [r[1] * 1000 for r in ok]
            results.append(
                {
                    "scenario": scenario,
                    "endpoint": f"POST /api/v1/{endpoint}",
                    "batch": int(batch),
                    "clients": int(clients),
                    "seconds": round(data["elapsed"], 1),
                    "requests": len(records),
                    "ok": len(ok),
                    "errors": errors,
                    "accepted_items": len(ids),
                    "items_per_s": round(len(ids) / data["elapsed"], 1),
                    "requests_per_s": round(len(ok) / data["elapsed"], 1),
                    "p50_ms": round(percentile(latencies, 50), 1),
                    "p99_ms": round(percentile(latencies, 99), 1),
                    "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
                    "lost_items": len(ids) - found,
                    "verdicts_stored": with_verdict if endpoint == "moderate" else None,
                }
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        app.control.purge()  # the wake-up messages for items no worker was started for

    load_after = os.getloadavg()
    print()
    print(
        f"{platform.node()} · {os.cpu_count()} CPU · gunicorn {args.workers} workers x {args.threads} threads (gthread) · "
        f"load generator in a separate process · {args.duration:.0f} s per /items scenario, {args.moderate_duration:.0f} s for /moderate · "
        f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    header = f"{'endpoint':<22} {'batch':>5} {'clients':>7} {'req/s':>8} {'items/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'lost':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['endpoint']:<22} {r['batch']:>5} {r['clients']:>7} {r['requests_per_s']:>8} {r['items_per_s']:>9} "
            f"{r['p50_ms']:>8} {r['p99_ms']:>8} {sum(r['errors'].values()):>6} {r['lost_items']:>5}"
        )
    for r in results:
        if r["errors"]:
            print(f"errors in {r['scenario']}: {r['errors']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"host": platform.node(), "cpus": os.cpu_count(), "workers": args.workers, "threads": args.threads, "load_average": [load_before[0], load_after[0]], "results": results}, indent=2))
    lost = sum(r["lost_items"] for r in results)
    print(f"\nlost items: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
