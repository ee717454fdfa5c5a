"""End-to-end load: accepted items/s and latency under load, then every accepted item
classified exactly once.

bench/api_load.py measures the API alone (acceptance, p50/p99, items missing from
the database). This bench adds the other half of "no accepted item is lost": a
Celery worker (tiny guard model) runs during and after the load, and the bench
waits until every accepted item has its verdict, then counts items missing,
items without a verdict and items with more than one.

It runs on a throwaway stack (its own PostgreSQL cluster and Redis server,
gunicorn with the production flags, see tests/ops/stack.py); the load comes
from a separate process (bench/api_load.py's generator: threads with keep-alive
clients).

    .venv/bin/python bench/load.py                                   # items:1:16 and items:100:4, 20 s each
    .venv/bin/python bench/load.py --duration 30 --scenarios items:10:8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.api_load import percentile  # noqa: E402
from tests.ops.stack import Stack  # noqa: E402

GENERATOR = str(REPO / "bench" / "api_load.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--scenarios", nargs="+", default=["items:1:16", "items:100:4"])
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--drain-timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    stack = Stack(database="guardsite_load", extra_env={"MODERATION_MICRO_BATCH_SIZE": "64", "DB_CONN_MAX_AGE": "60"}).start()
    results = []
    try:
        # The bench's policy is "general" (the generator's); the stack seeds "faults": add "general".
        stack.query("SELECT 1")
        subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); from tests.ops.conftest import publish_policy; publish_policy('general')"],
            cwd=REPO, env=stack.env(), check=True, timeout=300,
        )
        api = stack.start_api(workers=args.workers, threads=args.threads)
        worker = stack.start_worker(queues="default,gpu-infer", beat=True)
        for scenario in args.scenarios:
            endpoint, batch, clients = scenario.split(":")
            out = stack.logs / f"{scenario.replace(':', '-')}.json"
            load_before = os.getloadavg()[0]
            subprocess.run(
                [sys.executable, GENERATOR, "--generate", api.url, stack.secret, endpoint, batch, clients, str(args.duration), str(out), "--warmup", "4"],
                cwd=REPO, env=stack.env(), check=True,
            )
            data = json.loads(out.read_text())
            records = data["records"]
            ok = [r for r in records if r[2] in (200, 202)]
            ids = [i for r in ok for i in r[3]]
            latencies = [r[1] * 1000 for r in ok]
            drain_started = time.monotonic()
            outcome = stack.wait_all_done(ids, timeout=args.drain_timeout)
            drain_s = time.monotonic() - drain_started
            errors: dict[str, int] = {}
            for r in records:
                if r[2] not in (200, 202):
                    errors[f"{r[2]} {r[4]}"] = errors.get(f"{r[2]} {r[4]}", 0) + 1
            results.append(
                {
                    "scenario": scenario, "batch": int(batch), "clients": int(clients), "seconds": round(data["elapsed"], 1),
                    "requests_per_s": round(len(ok) / data["elapsed"], 1), "items_per_s": round(len(ids) / data["elapsed"], 1),
                    "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
                    "errors": errors, "accepted": len(ids), "lost": outcome.lost,
                    "without_verdict": outcome.accepted - outcome.verdicts, "duplicates": outcome.duplicates,
                    "drain_s": round(drain_s, 1), "classified_per_s": round(len(ids) / (data["elapsed"] + drain_s), 1),
                    "load_before": round(load_before, 1),
                }
            )
            print(results[-1], flush=True)
        worker.stop()
    finally:
        stack.stop()

    print()
    print(f"{platform.node()} · {os.cpu_count()} CPU · gunicorn {args.workers}x{args.threads} gthread, 1 Celery worker (tiny model), "
          f"throwaway PostgreSQL + Redis · load from a separate process · {args.duration:.0f} s per scenario")
    header = f"{'scenario':<14} {'req/s':>7} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'accepted':>8} {'lost':>5} {'no verdict':>10} {'dup':>4} {'drain s':>8} {'load':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['scenario']:<14} {r['requests_per_s']:>7} {r['items_per_s']:>8} {r['p50_ms']:>7} {r['p99_ms']:>7} {sum(r['errors'].values()):>6} "
              f"{r['accepted']:>8} {r['lost']:>5} {r['without_verdict']:>10} {r['duplicates']:>4} {r['drain_s']:>8} {r['load_before']:>5}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = sum(r["lost"] + r["without_verdict"] + r["duplicates"] for r in results)
    print(f"\nlost or unclassified or duplicated: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
