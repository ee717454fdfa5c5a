"""Hard samples for DPO (GuardReasoner HS-DPO): sample k answers per prompt from the current
model, keep the prompts where some are right and some wrong, chosen = a right one,
rejected = the wrong one with the highest reward (the hardest negative)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer import rewards
from trainer.data import ANSWER_END
from trainer.model_loading import END_TOKENS, end_token_ids


def sample_answers(model: Any, tokenizer: Any, prompts: Sequence[str], k: int, max_new_tokens: int,
                   temperature: float, seed: int, batch_prompts: int = 4) -> list[list[str]]:
    """k sampled answers per prompt from ``model`` (left-padded batches, only the new tokens decoded)."""
    import torch

    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    answers: list[list[str]] = []
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_prompts):
            chunk = list(prompts[start:start + batch_prompts])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **encoded, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                    max_new_tokens=max_new_tokens, num_return_sequences=k,
                    eos_token_id=end_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = generated[:, encoded["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=False)
            for index in range(len(chunk)):
                answers.append([_strip_padding(t, tokenizer) for t in texts[index * k:(index + 1) * k]])
    finally:
        tokenizer.padding_side = previous_side
    return answers


def _strip_padding(text: str, tokenizer: Any) -> str:
    pad = tokenizer.pad_token or ""
    if pad:
        text = text.replace(pad, "")
    return text.strip()


def _total(components: dict[str, float | None]) -> float:
    return sum(value for value in components.values() if value is not None)


def build_hard_pairs(rows: Sequence[dict[str, Any]], samples: Sequence[Sequence[str]],
                     gold_fallback: bool = False) -> tuple[list[dict[str, str]], dict[str, int]]:
    """DPO pairs from sampled answers: prompts with some right and some wrong answers.

    chosen = the right answer with the highest total reward, rejected = the wrong
    answer with the highest total reward (the hardest negative). With
    ``gold_fallback``, prompts whose answers are all wrong use the gold answer as chosen.
    """
    pairs: list[dict[str, str]] = []
    stats = {"prompts": len(rows), "mixed": 0, "all_right": 0, "all_wrong": 0, "gold_fallback": 0}
    for row, answers in zip(rows, samples, strict=True):
        scored = [(answer, rewards.is_correct(answer, row), _total(rewards.score(answer, row))) for answer in answers]
        right = sorted((s for s in scored if s[1]), key=lambda s: -s[2])
        wrong = sorted((s for s in scored if not s[1]), key=lambda s: -s[2])
        if right and wrong:
            stats["mixed"] += 1
            chosen = right[0][0]
        elif right:
            stats["all_right"] += 1
            continue
        else:
            stats["all_wrong"] += 1
            if not gold_fallback:
                continue
            stats["gold_fallback"] += 1
            chosen = row["completion"].removesuffix(ANSWER_END)
        pairs.append({"prompt": row["prompt"], "chosen": _end(chosen), "rejected": _end(wrong[0][0])})
    return pairs, stats


def _end(answer: str) -> str:
    """An answer ending the way the model is trained to end (once)."""
    text = answer
    for token in END_TOKENS:
        text = text.replace(token, "")
    return text.rstrip() + ANSWER_END
