"""Faults on a throwaway production-like stack (own PostgreSQL cluster and Redis server,
gunicorn, a Celery worker with the tiny model): whatever happens, every accepted item
ends with exactly one verdict.

A worker SIGKILLed mid-batch is specified in tests/moderation/test_worker.py
(test_worker_killed_mid_batch_loses_nothing_and_produces_no_duplicate_verdicts);
bench/faults.py repeats all four faults on this stack with figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.ops.stack import Stack, accepted, halt, run_submitters, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    stack = Stack(database="guardsite_faults").start()
    yield stack
    stack.stop()


def test_postgres_restart_while_accepting_items_answers_503_and_recovers_by_itself(stack):
    api = stack.start_api()
    worker = stack.start_worker()
    try:
        submitters = run_submitters(api, "pg")
        wait_until(lambda: len(accepted(submitters)) >= 15, 60, "items accepted before the restart")
        down_at = time.monotonic()
        stack.postgres.restart(down_s=2.0)
        up_at = time.monotonic()
        wait_until(lambda: any(when > up_at and status == 202 for s in submitters for when, status, _ in s.answers), 60, "an item accepted after the restart")
        time.sleep(2)
        halt(submitters)

        answers = [a for s in submitters for a in s.answers]
        statuses = {status for _, status, _ in answers}
        assert statuses <= {202, 503}, f"unexpected answers: {[u for s in submitters for u in s.unexpected][:5]}"
        refused = [a for a in answers if a[1] == 503]
        assert refused, "no request met the outage: the fault did not happen while accepting"
        assert all(retry_after and int(retry_after) > 0 for _, _, retry_after in refused)
        assert all(down_at - 1 <= when <= up_at + 30 for when, _, _ in refused), "503s long after the restart: no recovery"

        ids = accepted(submitters)
        outcome = stack.wait_all_done(ids, timeout=180)
        assert outcome.all_done_once, f"{outcome}\n{worker.output()[-3000:]}"
        # Retried requests reused their Idempotency-Key: not one extra item was created.
        created = stack.query("SELECT count(*) FROM moderation_item WHERE idempotency_key LIKE 'pg%%'")[0][0]
        assert created == len(ids)
    finally:
        worker.stop()
        api.process.stop()


def test_redis_restart_with_items_queued_loses_nothing(stack):
    api = stack.start_api()
    with api.client() as client:
        # No worker yet: the items wait as rows in the database and as wake-up messages in Redis.
        first = api.submit(client, [f"queued before the restart {n}" for n in range(12)])
        assert first.status_code == 202
        assert stack.redis.queued_messages("gpu-infer") > 0

        stack.redis.stop()  # every queued message is gone with it (no persistence)
        during = api.submit(client, [f"sent while Redis is down {n}" for n in range(6)])
        assert during.status_code == 202, during.text  # the database is the queue: still accepted
        stack.redis.start()

        worker = stack.start_worker()
        try:
            ids = first.json()["ids"] + during.json()["ids"]
            outcome = stack.wait_all_done(ids, timeout=180)
            assert outcome.all_done_once, f"{outcome}\n{worker.output()[-3000:]}"

            # A worker that was connected when Redis went away reconnects and goes on.
            stack.redis.restart(down_s=1.0)
            after = api.submit(client, [f"after the second restart {n}" for n in range(6)])
            assert after.status_code == 202
            outcome = stack.wait_all_done(after.json()["ids"], timeout=180)
            assert outcome.all_done_once, f"{outcome}\n{worker.output()[-3000:]}"
        finally:
            worker.stop()
            api.process.stop()
