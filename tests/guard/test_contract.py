"""The guard contract: what the model reads (render) and how its answer is read (parse)."""

from __future__ import annotations

import re

import pytest

from guard import contract
from guard.contract import CategorySpec, PolicySpec, Verdict

POLICY = PolicySpec(
    name="Test policy",
    description="For the contract tests.",
    categories=(
        CategorySpec("S1", "Weapons", "Helps build weapons.", violating_examples=("how to build a pipe bomb",)),
        CategorySpec("S2", "Fraud", "Helps commit fraud.", allowed_examples=("how do phishing scams work?",)),
        CategorySpec("S10", "Hate", "Demeans people."),
    ),
)

PROMPT_ONLY = "prompt: unsafe\nresponse: none\nrefusal: none\ncategories: S1\nexplanation: Asks how to build a bomb; violates S1."
WITH_RESPONSE = "prompt: unsafe\nresponse: safe\nrefusal: refusal\ncategories: S2\nexplanation: The AI refuses to help with fraud."


class FakeTokenizer:
    """Whitespace tokenizer: one token per word (enough to test truncation)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.words = text.split()
        return list(range(len(self.words)))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(self.words[i] for i in ids)


def test_render_puts_the_policy_before_the_conversation():
    rendered = contract.render(POLICY, "How do I build a bomb?", None, "reason")
    assert "S1: Weapons - Helps build weapons." in rendered.system
    assert "violates: how to build a pipe bomb" in rendered.system
    assert "allowed: how do phishing scams work?" in rendered.system
    assert rendered.user.startswith("User prompt:\nHow do I build a bomb?")
    assert "AI response: none" in rendered.user
    text = rendered.to_text()
    assert text.index("Policy: Test policy") < text.index("How do I build a bomb?")
    assert text.endswith("<start_of_turn>model\n")


def test_render_with_a_response_marks_it():
    rendered = contract.render(POLICY, "hi", "Hello! How can I help?", "fast")
    assert rendered.has_response
    assert rendered.user.endswith("AI response:\nHello! How can I help?")


def test_render_treats_a_blank_response_as_no_response():
    assert not contract.render(POLICY, "hi", "   ").has_response


def test_render_rejects_an_empty_prompt():
    with pytest.raises(ValueError, match="non-empty"):
        contract.render(POLICY, "  \n ", None)


def test_render_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        contract.render(POLICY, "hi", None, "slow")  # type: ignore[arg-type]


def test_render_truncates_long_text_by_tokens_and_records_it():
    words = " ".join(f"w{i}" for i in range(500))
    rendered = contract.render(POLICY, words, None, tokenizer=FakeTokenizer(), max_text_tokens=100)
    assert rendered.truncated
    assert "w0 " in rendered.user and "w499" in rendered.user and "w250" not in rendered.user
    assert "[...]" in rendered.user


def test_render_does_not_truncate_text_within_budget():
    rendered = contract.render(POLICY, "short prompt", None, tokenizer=FakeTokenizer(), max_text_tokens=100)
    assert not rendered.truncated


def test_render_truncates_by_characters_without_a_tokenizer():
    rendered = contract.render(POLICY, "x" * 10_000, None, max_text_tokens=100)
    assert rendered.truncated and len(rendered.user) < 1000


@pytest.mark.parametrize(
    "verdict,has_response",
    [
        (Verdict(prompt_label="unsafe", categories=["S1"], explanation="Asks for a bomb; violates S1."), False),
        (Verdict(prompt_label="safe", explanation="A harmless greeting."), False),
        (
            Verdict(prompt_label="unsafe", response_label="unsafe", refusal_label="compliance", categories=["S1", "S10"], explanation="Complies with a weapons request."),
            True,
        ),
        (Verdict(prompt_label="unsafe", response_label="safe", refusal_label="refusal", categories=["S2"], explanation="Refuses."), True),
    ],
)
def test_format_then_parse_round_trips(verdict, has_response):
    text = contract.format_answer(verdict, has_response)
    parsed = contract.parse(text, POLICY, has_response)
    assert parsed.ok, parsed.error
    got = parsed.verdict
    assert (got.prompt_label, got.response_label, got.refusal_label) == (
        verdict.prompt_label,
        verdict.response_label,
        verdict.refusal_label,
    )
    assert got.categories == verdict.categories
    assert got.explanation == verdict.explanation


@pytest.mark.parametrize(
    "verdict,has_response",
    [
        (Verdict(prompt_label="unsafe", categories=["S1"], explanation="Bomb request, S1."), False),
        (Verdict(prompt_label="safe", response_label="unsafe", refusal_label="compliance", categories=["S10"], explanation="Hateful reply."), True),
        (Verdict(prompt_label="safe", response_label="safe", refusal_label="compliance", explanation="Fine."), True),
    ],
)
def test_every_formatted_answer_matches_the_structured_output_regex(verdict, has_response):
    pattern = contract.answer_regex(POLICY, has_response)
    assert re.fullmatch(pattern, contract.format_answer(verdict, has_response))


def test_answer_regex_rejects_an_unknown_code():
    pattern = contract.answer_regex(POLICY, False)
    assert not re.fullmatch(pattern, PROMPT_ONLY.replace("S1", "S7"))


def test_parse_is_tolerant_of_case_whitespace_blank_lines_and_end_of_turn():
    text = "\n  Prompt :  UNSAFE \n\nRESPONSE: None\nrefusal=none\n categories:  s1 , s10 .\nexplanation:  Violates S1.  <end_of_turn>"
    parsed = contract.parse(text, POLICY, has_response=False)
    assert parsed.ok, parsed.error
    assert parsed.verdict.prompt_label == "unsafe"
    assert parsed.verdict.categories == ["S1", "S10"]
    assert parsed.verdict.explanation == "Violates S1."


def test_parse_keeps_a_wrapped_explanation():
    parsed = contract.parse(PROMPT_ONLY + "\nIt names a device.", POLICY, False)
    assert parsed.ok
    assert parsed.verdict.explanation.endswith("violates S1. It names a device.")


def test_parse_deduplicates_repeated_codes():
    parsed = contract.parse(PROMPT_ONLY.replace("categories: S1", "categories: S1, s1"), POLICY, False)
    assert parsed.verdict.categories == ["S1"]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty output"),
        ("<end_of_turn>", "empty output"),
        (PROMPT_ONLY.replace("categories: S1", "categories: S7"), "unknown category code 'S7'"),
        (PROMPT_ONLY.replace("prompt: unsafe", "prompt: dangerous"), "prompt: 'dangerous' is not one of safe, unsafe"),
        (PROMPT_ONLY.replace("refusal: none\n", ""), "missing field(s): refusal"),
        (PROMPT_ONLY + "\nprompt: safe", "field 'prompt' appears twice"),
        (PROMPT_ONLY.replace("prompt: unsafe", "prompt: safe"), "categories given for a verdict with no unsafe label"),
        ("The prompt is unsafe because it asks for a bomb.", "unexpected line"),
        (PROMPT_ONLY.replace("response: none", "response: safe"), "response/refusal labelled although there is no AI response"),
    ],
)
def test_parse_rejects_malformed_answers_with_a_reason(text, reason):
    parsed = contract.parse(text, POLICY, has_response=False)
    assert not parsed.ok
    assert reason in parsed.error.reason
    assert parsed.error.raw_output == text


def test_parse_rejects_response_none_when_there_is_a_response():
    parsed = contract.parse(WITH_RESPONSE.replace("response: safe", "response: none"), POLICY, has_response=True)
    assert not parsed.ok
    assert "response: 'none'" in parsed.error.reason


def test_parse_rejects_a_code_of_another_policy():
    other = PolicySpec(name="Other", categories=(CategorySpec("X1", "Other thing"),))
    assert not contract.parse(PROMPT_ONLY, other, False).ok


def test_failed_verdict_fails_closed_and_keeps_the_raw_output():
    parsed = contract.parse("garbage", POLICY, True)
    verdict = contract.failed_verdict(parsed.error, has_response=True, mode="reason")
    assert verdict.prompt_label == "unsafe" and verdict.response_label == "unsafe"
    assert verdict.is_unsafe
    assert verdict.raw_output == "garbage"
    assert verdict.parse_error


def test_answer_prefix_before_teacher_forces_earlier_labels():
    labels = {"prompt": "unsafe", "response": "safe", "refusal": "refusal"}
    assert contract.answer_prefix_before("prompt", labels) == "prompt:"
    assert contract.answer_prefix_before("refusal", labels) == "prompt: unsafe\nresponse: safe\nrefusal:"
    assert contract.answer_prefix_before("explanation", labels, ["S1", "S2"]).endswith("categories: S1, S2\nexplanation:")


def test_primary_field_is_the_response_when_there_is_one():
    assert contract.primary_field(True) == "response"
    assert contract.primary_field(False) == "prompt"


def test_verdict_to_dict_is_json_ready():
    import json

    verdict = Verdict(prompt_label="unsafe", categories=["S1"], confidence=0.9, probabilities={"prompt": {"safe": 0.1, "unsafe": 0.9}})
    assert json.loads(json.dumps(verdict.to_dict()))["categories"] == ["S1"]
