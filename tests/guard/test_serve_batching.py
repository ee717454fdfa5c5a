"""guard_serve batches concurrent completions instead of serving them one by one."""

from __future__ import annotations

import threading
import time

import pytest

from guard.backends.base import GuardError
from guard.serve import GenerationBatcher, _Job

PROMPTS = [f"<start_of_turn>user\nsay {word}<end_of_turn>\n<start_of_turn>model\n" for word in ("a", "bb", "ccc", "dddd", "e")]


def job(text: str, max_tokens: int = 6) -> _Job:
    return _Job(text, max_tokens, 0.0, None, (), None)


def wait_for(condition, what: str) -> None:
    """Polls instead of spinning for ever: the test holds the model's lock meanwhile."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def start_behind_a_busy_model(batcher: GenerationBatcher, runs: list[threading.Thread]) -> None:
    """Makes the batcher take a first request and block on the model (whose lock the
    caller holds), then starts ``runs``: their requests all queue behind it, so the
    next batch holds exactly them, whatever the thread timing."""
    blocker = threading.Thread(target=batcher.submit, args=(job(PROMPTS[0]),))
    blocker.start()
    wait_for(lambda: batcher.batch_sizes == [1], "the batcher never took the first request")
    for thread in runs:
        thread.start()
    wait_for(lambda: batcher.jobs.qsize() == len(runs), "the requests never queued")
    runs.append(blocker)


def test_requests_waiting_for_a_busy_model_are_generated_in_one_batch(tiny_backend):
    alone = [tiny_backend.generate([text], max_new_tokens=6)[0] for text in PROMPTS]
    batcher = GenerationBatcher(tiny_backend)
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.submit(job(PROMPTS[i])))) for i in range(5)]
    with tiny_backend._lock:  # the model is busy: every request has to wait
        start_behind_a_busy_model(batcher, threads)
    for thread in threads:
        thread.join(60)
    assert batcher.batch_sizes == [1, 5]
    assert [results[i].text for i in range(5)] == [g.text for g in alone]
    assert [results[i].completion_tokens for i in range(5)] == [g.completion_tokens for g in alone]


def test_a_request_that_fails_alone_does_not_fail_the_others_in_its_batch(tiny_backend):
    batcher = GenerationBatcher(tiny_backend)
    too_long = job("word " * 5000, max_tokens=6)
    fine = job(PROMPTS[0])
    outcomes: dict[str, object] = {}

    def run(name: str, j: _Job) -> None:
        try:
            outcomes[name] = batcher.submit(j)
        except GuardError as error:
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=(n, j)) for n, j in (("long", too_long), ("fine", fine))]
    with tiny_backend._lock:
        start_behind_a_busy_model(batcher, threads)
    for thread in threads:
        thread.join(60)
    assert batcher.batch_sizes[:2] == [1, 2]
    assert isinstance(outcomes["long"], GuardError)
    assert outcomes["fine"].text == tiny_backend.generate([PROMPTS[0]], max_new_tokens=6)[0].text


@pytest.mark.parametrize("temperature,seeds_differ", [(0.0, False), (0.7, True)])
def test_only_requests_with_the_same_generation_parameters_share_a_call(temperature, seeds_differ):
    one = _Job("x", 6, temperature, None, (), 1)
    two = _Job("y", 6, temperature, None, (), 2)
    assert (one.key != two.key) == seeds_differ
    assert _Job("x", 6, 0.0, None, (), None).key != _Job("x", 7, 0.0, None, (), None).key
