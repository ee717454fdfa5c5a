"""Rebuild a correct Gemma tokenizer from the one transformers derives from a GGUF.

Why this exists: transformers (5.x) turns the GGUF's SentencePiece-BPE vocabulary
into a *Unigram* model whose scores are minus the merge rank, and its
``GemmaTokenizer`` then rebuilds a BPE with **no merges**: text is split into
single characters, which the model was never trained on (it answers nonsense).
SentencePiece BPE merges, at each step, the adjacent pair whose concatenation
has the highest score; listing every (left, right) split of every piece ordered
by the merged piece's score gives HF ``tokenizers`` the same behaviour.

Pieces scored -1000 are SentencePiece user-defined/control symbols (turn
markers, whitespace runs, ...): they become added tokens so they are matched
whole, and a ``<bos>`` is prepended as Gemma expects.
"""

from __future__ import annotations

import json
from pathlib import Path

CONTROL_SCORE = -1000.0


def bpe_merges(vocab: list[tuple[str, float]]) -> list[list[str]]:
    index = {piece: i for i, (piece, _) in enumerate(vocab)}
    merges: list[tuple[float, int, int, str, str]] = []
    for piece, score in vocab:
        if len(piece) < 2 or score == CONTROL_SCORE:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in index and right in index:
                merges.append((score, index[left], index[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [[left, right] for _, _, _, left, right in merges]


def repair_tokenizer_dir(model_dir: Path) -> None:
    """Rewrite ``tokenizer.json``/``tokenizer_config.json`` in ``model_dir`` in place."""
    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "Unigram":
        return  # already a BPE tokenizer: nothing to repair
    vocab: list[tuple[str, float]] = [(piece, float(score)) for piece, score in model["vocab"]]
    data["model"] = {
        "type": "BPE",
        "dropout": None,
        "unk_token": "<unk>",
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": True,
        "byte_fallback": True,
        "ignore_merges": False,
        "vocab": {piece: i for i, (piece, _) in enumerate(vocab)},
        "merges": bpe_merges(vocab),
    }
    added = {token["content"] for token in data.get("added_tokens", [])}
    for i, (piece, score) in enumerate(vocab):
        if score == CONTROL_SCORE and piece not in added:
            special = piece.startswith("<") and piece.endswith(">")
            data["added_tokens"].append(
                {"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": special}
            )
    data["added_tokens"].sort(key=lambda token: token["id"])
    data["pre_tokenizer"] = None
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # Load tokenizer.json as it is; GemmaTokenizer would rebuild its own (broken) BPE.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["padding_side"] = "left"
    config.pop("model_type", None)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
