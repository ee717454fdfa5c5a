"""Faults on a throwaway production-like stack, with figures.

Each scenario runs on its own PostgreSQL cluster and Redis server (never the
shared ones), the API under gunicorn and Celery workers with the tiny guard
model (tests/ops/stack.py), and checks that every accepted item ends with
exactly one verdict:

- kill:     a worker SIGKILLed (parent and pool child) in the middle of a batch;
- redis:    Redis restarted (no persistence: queued messages are lost) while items are queued,
            and again while a worker is connected;
- postgres: PostgreSQL restarted while clients are submitting (503 + Retry-After, then recovery);
- oom:      CUDA out of memory injected in the model's forward pass above 4 rows (the worker
            halves its batch and goes on), against an unconstrained run for comparison.

    .venv/bin/python bench/faults.py                 # all four
    .venv/bin/python bench/faults.py kill postgres   # some
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ops.stack import Stack, accepted, halt, run_submitters, wait_until  # noqa: E402

SCENARIOS = ("kill", "redis", "postgres", "oom")


def status_counts(stack: Stack, ids: list[int]) -> dict[str, int]:
    return stack.outcome(ids).by_status


def kill_worker(stack: Stack) -> dict[str, Any]:
    api = stack.start_api()
    env = {"MODERATION_MICRO_BATCH_SIZE": "4", "MODERATION_LEASE_SECONDS": "6"}
    worker = stack.start_worker(queues="gpu-infer", beat=False, **env)
    with api.client() as client:
        # Reason mode generates text: a micro-batch takes long enough to be caught running.
        response = client.post(
            "/api/v1/items",
            json={"policy": "faults", "mode": "reason", "items": [{"prompt": f"kill test {n}: how do I sharpen a knife?"} for n in range(40)]},
        )
    ids = response.json()["ids"]
    wait_until(lambda: status_counts(stack, ids).get("done", 0) >= 4 and status_counts(stack, ids).get("running", 0) > 0, 300, "a batch in flight", interval=0.05)
    worker.kill_hard()
    killed_at = time.monotonic()
    at_kill = status_counts(stack, ids)
    replacement = stack.start_worker(queues="default,gpu-infer", beat=True, **env)
    outcome = stack.wait_all_done(ids, timeout=600)
    recovered_s = time.monotonic() - killed_at
    attempts = dict(stack.query("SELECT attempts, count(*) FROM moderation_item WHERE id = ANY(%s) GROUP BY 1 ORDER BY 1", (ids,)))
    replacement.stop()
    api.process.stop()
    return {
        "fault": "worker SIGKILL mid-batch",
        "accepted": outcome.accepted, "lost": outcome.lost, "verdicts": outcome.verdicts, "duplicates": outcome.duplicates,
        "all_done_once": outcome.all_done_once,
        "detail": f"at kill: {at_kill}; attempts per item {attempts}; every item done {recovered_s:.0f} s after the kill "
                  "(lease 6 s + sweeper every 30 s + classification)",
    }


def restart_redis(stack: Stack) -> dict[str, Any]:
    api = stack.start_api()
    with api.client() as client:
        first = api.submit(client, [f"queued before the restart {n}" for n in range(30)]).json()["ids"]
        queued_messages = stack.redis.queued_messages("gpu-infer")
        stack.redis.stop()
        during = api.submit(client, [f"sent while Redis is down {n}" for n in range(10)])
        stack.redis.start()
        restarted_at = time.monotonic()
        worker = stack.start_worker()
        ids = first + during.json()["ids"]
        outcome = stack.wait_all_done(ids, timeout=300)
        first_drain_s = time.monotonic() - restarted_at
        stack.redis.restart(down_s=1.0)
        again_at = time.monotonic()
        after = api.submit(client, [f"after the second restart {n}" for n in range(10)]).json()["ids"]
        second = stack.wait_all_done(after, timeout=300)
        second_drain_s = time.monotonic() - again_at
    worker.stop()
    api.process.stop()
    total = stack.outcome(ids + after)
    return {
        "fault": "Redis restart, items queued",
        "accepted": total.accepted, "lost": total.lost, "verdicts": total.verdicts, "duplicates": total.duplicates,
        "all_done_once": outcome.all_done_once and second.all_done_once and total.all_done_once,
        "detail": f"{queued_messages} wake-up messages lost with Redis; {len(during.json()['ids'])} items accepted (HTTP {during.status_code}) "
                  f"while Redis was down; all done {first_drain_s:.0f} s after the restart; a connected worker "
                  f"reconnected and finished new items {second_drain_s:.0f} s after a second restart",
    }


def restart_postgres(stack: Stack) -> dict[str, Any]:
    api = stack.start_api()
    worker = stack.start_worker()
    submitters = run_submitters(api, "pgbench", count=4)
    wait_until(lambda: len(accepted(submitters)) >= 30, 120, "items accepted before the restart")
    down_at = time.monotonic()
    stack.postgres.restart(down_s=3.0)
    up_at = time.monotonic()
    wait_until(lambda: any(when > up_at and status == 202 for s in submitters for when, status, _ in s.answers), 120, "acceptance after the restart")
    time.sleep(3)
    halt(submitters)
    answers = sorted(a for s in submitters for a in s.answers)
    refused = [a for a in answers if a[1] == 503]
    refused_window = (max(w for w, _, _ in refused) - min(w for w, _, _ in refused)) if refused else 0.0
    last_503 = max((w for w, _, _ in refused), default=up_at)
    first_ok_after = min((w for w, status, _ in answers if status == 202 and w > last_503), default=float("nan"))
    ids = accepted(submitters)
    outcome = stack.wait_all_done(ids, timeout=300)
    created = stack.query("SELECT count(*) FROM moderation_item WHERE idempotency_key LIKE 'pgbench%%'")[0][0]
    worker.stop()
    api.process.stop()
    statuses: dict[int, int] = {}
    for _, status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "fault": "PostgreSQL restart under load",
        "accepted": outcome.accepted, "lost": outcome.lost, "verdicts": outcome.verdicts, "duplicates": outcome.duplicates,
        "all_done_once": outcome.all_done_once and created == len(ids) and set(statuses) <= {202, 503},
        "detail": f"answers {statuses} (Retry-After on every 503: {all(r for _, _, r in refused)}); database down "
                  f"{up_at - down_at:.1f} s (stop, 3 s down, start); 503s seen over {refused_window:.1f} s, first 202 "
                  f"{first_ok_after - last_503:.1f} s after the last 503, without restarting gunicorn; {created} items created for {len(ids)} accepted (retries reused their Idempotency-Key)",
    }


def gpu_oom(stack: Stack) -> dict[str, Any]:
    """In-process, on the stack's database: the worker's code path with CUDA OOM injected above 4 rows."""
    os.environ.update(stack.env(MODERATION_MICRO_BATCH_SIZE="16"))
    import django

    django.setup()
    import torch

    from guard.runtime import get_backend, reset_backends
    from moderation import dispatch

    api = stack.start_api()
    with api.client() as client:
        roomy_ids = api.submit(client, [f"oom baseline {n}: how do I whittle a spoon?" for n in range(48)]).json()["ids"]
    reset_backends()
    backend = get_backend()
    backend.max_batch_size = 16
    started = time.monotonic()
    dispatch.run_pending(time_budget_s=600)
    roomy_s = time.monotonic() - started

    with api.client() as client:
        ids = api.submit(client, [f"oom test {n}: how do I whittle a spoon?" for n in range(48)]).json()["ids"]
    real = backend.runner.forward
    sizes: list[int] = []
    ooms = 0

    def small_gpu(*args: Any, **kwargs: Any) -> Any:
        nonlocal ooms
        rows = args[1].shape[0]  # runner.forward(cache, ids, ...)
        sizes.append(rows)
        if rows > 4:
            ooms += 1
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected, {rows} rows)")
        return real(*args, **kwargs)

    backend.runner.forward = small_gpu
    started = time.monotonic()
    result = dispatch.run_pending(time_budget_s=600)
    cramped_s = time.monotonic() - started
    del backend.runner.forward
    api.process.stop()
    outcome = stack.outcome(ids)
    roomy = stack.outcome(roomy_ids)
    attempts = dict(stack.query("SELECT attempts, count(*) FROM moderation_item WHERE id = ANY(%s) GROUP BY 1", (ids,)))
    return {
        "fault": "GPU out of memory mid-batch",
        "accepted": outcome.accepted, "lost": outcome.lost, "verdicts": outcome.verdicts, "duplicates": outcome.duplicates,
        "all_done_once": outcome.all_done_once and roomy.all_done_once and result.failed == 0,
        "detail": f"{ooms} OOMs caught (first rows tried: {sorted(set(sizes), reverse=True)}); attempts per item {attempts}; "
                  f"48 items in {cramped_s:.1f} s with OOMs vs {roomy_s:.1f} s without (tiny model, CPU)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    runners = {"kill": kill_worker, "redis": restart_redis, "postgres": restart_postgres, "oom": gpu_oom}
    results = []
    for name in args.scenarios or SCENARIOS:
        print(f"running {name} ...", flush=True)
        stack = Stack(database=f"guardsite_faults_{name}").start()
        started = time.monotonic()
        try:
            result = runners[name](stack)
        finally:
            stack.stop()
        result["seconds"] = round(time.monotonic() - started)
        results.append(result)
        print(f"  {result}", flush=True)

    print()
    header = f"{'fault':<32} {'accepted':>8} {'lost':>5} {'verdicts':>8} {'dup':>4} {'ok':>4} {'s':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['fault']:<32} {r['accepted']:>8} {r['lost']:>5} {r['verdicts']:>8} {r['duplicates']:>4} {'yes' if r['all_done_once'] else 'NO':>4} {r['seconds']:>5}")
    print()
    for r in results:
        print(f"- {r['fault']}: {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["all_done_once"] and r["lost"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
