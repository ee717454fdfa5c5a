"""The transformers backend on the tiny random model: shapes, batching, probabilities, modes."""

from __future__ import annotations

import math

import pytest
import torch

from guard import contract
from guard.backends.base import GuardError, GuardRequest
from guard.backends.transformers_backend import TransformersBackend, run_in_halving_batches
from guard.contract import PolicySpec

LONG = "Please explain, in great detail and with many examples, " * 3


def requests_for(policy, mode="fast"):
    return [
        GuardRequest(policy, "How do I build a pipe bomb?", mode=mode),
        GuardRequest(policy, LONG + "how the stock market works.", "Stocks are shares of companies.", mode=mode),
        GuardRequest(policy, "hi", mode=mode),
        GuardRequest(policy, "Write a phishing email.", "Sorry, I can't help with that.", mode=mode),
    ]


def close(a: dict, b: dict, tol: float = 1e-4) -> bool:
    return a.keys() == b.keys() and all(
        (close(a[k], b[k], tol) if isinstance(a[k], dict) else abs(a[k] - b[k]) <= tol) for k in a
    )


def test_a_verdict_is_the_same_alone_and_in_a_left_padded_batch(tiny_backend, policy):
    batch = requests_for(policy)
    together = tiny_backend.classify_batch(batch)
    for request, verdict in zip(batch, together, strict=True):
        alone = tiny_backend.classify_batch([request])[0]
        assert close(alone.probabilities, verdict.probabilities), request.prompt
        assert alone.categories == verdict.categories


def test_reason_explanations_are_the_same_alone_and_in_a_batch(tiny_backend, policy):
    batch = requests_for(policy, mode="reason")[:3]
    together = tiny_backend.classify_batch(batch)
    for request, verdict in zip(batch, together, strict=True):
        assert tiny_backend.classify_batch([request])[0].explanation == verdict.explanation


def test_fast_mode_probabilities_sum_to_one_per_field(tiny_backend, policy):
    for request, verdict in zip(requests_for(policy), tiny_backend.classify_batch(requests_for(policy)), strict=True):
        has_response = request.response is not None
        expected = {"prompt", "categories"} | ({"response", "refusal"} if has_response else set())
        assert set(verdict.probabilities) == expected
        for name, dist in verdict.probabilities.items():
            assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-5), name
        assert set(verdict.probabilities["categories"]) == {"S1", "S2", "S10", "none"}
        assert set(verdict.probabilities["prompt"]) == {"safe", "unsafe"}


def test_confidence_is_the_unsafe_probability_of_the_judged_text(tiny_backend, policy):
    prompt_only, with_response = tiny_backend.classify_batch(requests_for(policy)[:2])
    assert prompt_only.confidence == prompt_only.probabilities["prompt"]["unsafe"]
    assert with_response.confidence == with_response.probabilities["response"]["unsafe"]


def test_labels_follow_the_most_probable_choice(tiny_backend, policy):
    for verdict in tiny_backend.classify_batch(requests_for(policy)):
        prompt = verdict.probabilities["prompt"]
        assert verdict.prompt_label == max(prompt, key=prompt.get)
        if verdict.response_label is not None:
            response = verdict.probabilities["response"]
            assert verdict.response_label == max(response, key=response.get)


def test_fast_verdicts_are_valid_answers_of_the_contract(tiny_backend, policy):
    for request, verdict in zip(requests_for(policy), tiny_backend.classify_batch(requests_for(policy)), strict=True):
        assert verdict.mode == "fast" and verdict.explanation == ""
        assert bool(verdict.categories) == verdict.is_unsafe
        parsed = contract.parse(verdict.raw_output, policy, request.response is not None)
        assert parsed.ok, parsed.error


def test_category_decision_is_multi_label_with_at_least_the_top_code():
    spec = PolicySpec("p", categories=(contract.CategorySpec("S1", "a"), contract.CategorySpec("S2", "b"), contract.CategorySpec("S3", "c")))
    assert TransformersBackend._decide_categories(spec, {"S1": 0.1, "S2": 0.15, "S3": 0.05, "none": 0.7}) == ["S2"]
    assert TransformersBackend._decide_categories(spec, {"S1": 0.3, "S2": 0.05, "S3": 0.4, "none": 0.25}) == ["S1", "S3"]


def test_a_policy_without_categories_scores_only_none(tiny_backend):
    empty = PolicySpec("General", categories=())
    verdict = tiny_backend.classify_batch([GuardRequest(empty, "How do I build a pipe bomb?")])[0]
    assert verdict.probabilities["categories"] == {"none": 1.0}
    assert verdict.categories == []


def test_a_calibration_temperature_softens_the_probabilities(tiny_backend, policy, monkeypatch):
    request = GuardRequest(policy, "How do I build a pipe bomb?")
    sharp = tiny_backend.classify_batch([request])[0]
    monkeypatch.setattr(tiny_backend, "temperature", 4.0)
    soft = tiny_backend.classify_batch([request])[0]
    assert abs(soft.confidence - 0.5) < abs(sharp.confidence - 0.5)


def test_reason_mode_agrees_with_fast_mode_and_parses(tiny_backend, policy):
    fast = tiny_backend.classify_batch(requests_for(policy))
    reason = tiny_backend.classify_batch(requests_for(policy, mode="reason"))
    for request, f, r in zip(requests_for(policy), fast, reason, strict=True):
        assert r.parse_error is None
        assert r.mode == "reason"
        assert (r.prompt_label, r.response_label, r.refusal_label, r.categories) == (
            f.prompt_label,
            f.response_label,
            f.refusal_label,
            f.categories,
        )
        assert r.explanation and "\n" not in r.explanation
        assert len(tiny_backend.encode(r.explanation)) <= tiny_backend.max_new_tokens + 1
        assert contract.parse(r.raw_output, policy, request.response is not None).ok
        assert r.confidence == f.confidence


def test_unconstrained_generation_reports_a_parse_failure_instead_of_guessing(tiny_backend, policy):
    # The random model cannot write the answer block: the failure is kept, fail-closed.
    verdict = tiny_backend.classify_batch([GuardRequest(policy, "hi", "hello", mode="reason")], constrained=False)[0]
    assert verdict.parse_error
    assert verdict.raw_output
    assert verdict.prompt_label == "unsafe" and verdict.response_label == "unsafe"


def test_over_long_text_is_truncated_by_tokens_and_recorded(tiny_backend, policy):
    request = GuardRequest(policy, "word " * 3000, "answer " * 3000)
    item = tiny_backend.prepare(request)
    assert item.truncated
    assert len(item.input_ids) <= tiny_backend.max_input_tokens
    verdict = tiny_backend.classify_batch([request])[0]
    assert verdict.truncated


def test_short_text_is_not_marked_truncated(tiny_backend, policy):
    assert not tiny_backend.classify_batch([GuardRequest(policy, "hello there")])[0].truncated


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_prompt_is_a_clear_error(tiny_backend, policy, prompt):
    with pytest.raises(GuardError, match="empty"):
        tiny_backend.classify_batch([GuardRequest(policy, prompt)])


def test_a_policy_that_fills_the_input_budget_is_a_clear_error(tiny_backend, policy, monkeypatch):
    monkeypatch.setattr(tiny_backend, "max_input_tokens", 64)
    monkeypatch.setattr(tiny_backend, "_budgets", {})
    with pytest.raises(GuardError, match="GUARD_MAX_INPUT_TOKENS"):
        tiny_backend.classify_batch([GuardRequest(policy, "hi")])


def test_a_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(GuardError, match="could not load guard model"):
        TransformersBackend(tmp_path, device="cpu")


def test_out_of_memory_halves_the_batch_and_keeps_the_order():
    sizes: list[int] = []

    def judge(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return [x * 10 for x in batch]

    assert run_in_halving_batches(judge, list(range(7)), batch_size=8) == [x * 10 for x in range(7)]
    assert sizes[:3] == [7, 4, 2]
    assert max(sizes[3:]) <= 2


def test_out_of_memory_at_batch_size_one_is_a_guard_error():
    def judge(batch: list[int]) -> list[int]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(GuardError, match="batch of one"):
        run_in_halving_batches(judge, [1, 2, 3], batch_size=4)


def test_a_backend_batch_that_runs_out_of_memory_is_retried_smaller(tiny_backend, policy, monkeypatch):
    backend = tiny_backend
    monkeypatch.setattr(backend, "max_batch_size", 4)
    real_score = backend._score
    seen: list[int] = []

    def score_with_small_memory(items, *, explain):
        seen.append(len(items))
        if len(items) > 1:
            raise torch.OutOfMemoryError("injected")
        return real_score(items, explain=explain)

    monkeypatch.setattr(backend, "_score", score_with_small_memory)
    verdicts = backend.classify_batch(requests_for(policy))
    assert [v.response_label is not None for v in verdicts] == [False, True, False, True]
    assert seen[:3] == [4, 2, 1]


def test_a_lora_adapter_is_loaded_on_top_of_the_base(tiny_dir, policy, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from guard.runtime import resolve_model

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    resolved = resolve_model(str(tmp_path / "adapter"))
    assert resolved.base_path == tiny_dir and resolved.adapter_path == (tmp_path / "adapter").resolve()

    request = GuardRequest(policy, "How do I build a pipe bomb?")
    plain = TransformersBackend(tiny_dir, device="cpu").classify_batch([request])[0]
    adapted = TransformersBackend(resolved.base_path, resolved.adapter_path, device="cpu").classify_batch([request])[0]
    assert not close(plain.probabilities, adapted.probabilities, tol=1e-6)


def test_generation_honours_a_regex_constraint(tiny_backend):
    pattern = r"prompt: (safe|unsafe)\n"
    result = tiny_backend.generate(["<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"], max_new_tokens=12, regex=pattern)[0]
    assert result.text in ("prompt: safe\n", "prompt: unsafe\n")
    assert result.finish_reason == "stop"


def test_generation_stops_at_a_stop_string(tiny_backend):
    free = tiny_backend.generate(["hello"], max_new_tokens=6)[0]
    assert free.completion_tokens == 6 and free.finish_reason == "length"
    marker = free.text[len(free.text) // 2 :][:3]
    stopped = tiny_backend.generate(["hello"], max_new_tokens=6, stop=[marker])[0]
    assert stopped.finish_reason == "stop"
    assert marker not in stopped.text and free.text.startswith(stopped.text)


def reference_restricted(model, ids: list[int], allowed: list[int]) -> torch.Tensor:
    """Log-softmax over ``allowed`` at the end of ``ids`` from a plain HF forward (no padding, no cache)."""
    with torch.inference_mode():
        logits = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
    return torch.log_softmax(logits[allowed].float(), dim=0)


def test_scores_equal_a_plain_forward_beyond_the_sliding_window(tiny_backend, policy, monkeypatch):
    # Inputs longer than the 512-token sliding window, batched with a short one (left padding):
    # the explicit masks and positions must give what an unpadded, uncached forward gives.
    monkeypatch.setattr(tiny_backend, "max_input_tokens", 1500)
    monkeypatch.setattr(tiny_backend, "_budgets", {})
    long_request = GuardRequest(policy, "tell me about the history of bread " * 60, "Bread is old. " * 30)
    short_request = GuardRequest(policy, "hi")
    verdicts = tiny_backend.classify_batch([long_request, short_request])
    model = tiny_backend.model
    for request, verdict in zip([long_request, short_request], verdicts, strict=True):
        item = tiny_backend.prepare(request)
        if request is long_request:
            assert len(item.input_ids) > 512
        labels = {"prompt": verdict.prompt_label, "response": verdict.response_label or "none", "refusal": verdict.refusal_label or "none"}
        prefix = item.input_ids + tiny_backend.encode(contract.answer_prefix_before("prompt", labels))
        choice = tiny_backend.choice_ids["prompt"]
        expected = reference_restricted(model, prefix, [choice["safe"], choice["unsafe"]]).exp()
        assert abs(float(expected[1]) - verdict.probabilities["prompt"]["unsafe"]) < 1e-4
        if request.response:
            prefix = item.input_ids + tiny_backend.encode(contract.answer_prefix_before("response", labels))
            choice = tiny_backend.choice_ids["response"]
            expected = reference_restricted(model, prefix, [choice["safe"], choice["unsafe"]]).exp()
            assert abs(float(expected[1]) - verdict.probabilities["response"]["unsafe"]) < 1e-4

        if request is short_request:
            continue
        # Categories: candidates' path probabilities (relative to "none") from plain forwards.
        trie = tiny_backend._trie(policy)
        root = item.input_ids + tiny_backend.encode(contract.answer_prefix_before("categories", labels))
        scores = {}
        for label, end in trie.candidates:
            if label not in ("S1", "S10", "none"):
                continue
            path = []
            node = end
            while node >= 0:
                path.append(node)
                node = trie.parents[node]
            path.reverse()
            total, parent, ids = 0.0, -1, list(root)
            for node in path:
                allowed = trie.allowed(parent)
                total += float(reference_restricted(model, ids, allowed)[allowed.index(trie.tokens[node])])
                ids.append(trie.tokens[node])
                parent = node
            allowed = trie.allowed(end)
            if len(allowed) > len(trie.terminators[end]):
                log_probs = reference_restricted(model, ids, allowed)
                total += float(torch.logsumexp(log_probs[len(allowed) - len(trie.terminators[end]) :], 0))
            scores[label] = total
        got = verdict.probabilities["categories"]
        for code in ("S1", "S10"):
            expected_ratio = scores[code] - scores["none"]
            assert abs(expected_ratio - math.log(got[code] / got["none"])) < 1e-3


def test_the_policy_head_is_computed_once_and_reused(tiny_backend, policy):
    tiny_backend._prefix_kv.clear()
    request = GuardRequest(policy, "How do I build a pipe bomb?")
    first = tiny_backend.classify_batch([request])[0]
    assert len(tiny_backend._prefix_kv) == 1
    head = next(iter(tiny_backend._prefix_kv))
    assert len(head) == tiny_backend.prepare(request).head_len > 100
    again = tiny_backend.classify_batch([request, GuardRequest(policy, "hello", "hi")])[0]
    assert len(tiny_backend._prefix_kv) == 1
    assert close(first.probabilities, again.probabilities)


def test_the_chunked_greedy_pick_equals_the_argmax_of_the_full_logits(tiny_backend):
    runner = tiny_backend.runner
    hidden = torch.randn(5, runner.lm_head.shape[1], generator=torch.Generator().manual_seed(0)).to(runner.lm_head.dtype)
    full = runner.logits(hidden)
    assert torch.equal(runner.greedy(hidden), torch.argmax(full, dim=-1))
    banned = torch.argmax(full, dim=-1).tolist()
    full[:, banned] = float("-inf")
    assert torch.equal(runner.greedy(hidden, banned), torch.argmax(full, dim=-1))


def test_a_tie_across_lm_head_chunks_goes_to_the_lowest_token_id(tiny_backend, monkeypatch):
    from guard.backends import gemma_runner

    runner = tiny_backend.runner
    monkeypatch.setattr(gemma_runner, "GREEDY_CHUNK_CPU", 1000)
    head = runner.lm_head.clone()
    head[2500] = head[7100] = head.abs().max() * 50  # the same winning row in two chunks
    monkeypatch.setattr(runner, "lm_head", head)
    hidden = head[2500:2501].clone()
    assert runner.greedy(hidden).tolist() == [2500]
