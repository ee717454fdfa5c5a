"""Write ``backend_regression.json``: 64 fixed requests and the verdicts the
transformers backend gives them with the real embedded model on CPU.

The regression test (tests/guard/test_backend_regression.py) asserts that a
rewrite of the backend keeps these answers: labels, categories, probabilities
within 1e-4 and reason-mode explanations. Regenerate only when a change of
answers is intended (and say so in the commit):

    .venv/bin/python tests/guard/data/make_backend_regression.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

# Permissively licensed sources only (MIT / Apache-2.0); the texts are copied into the fixture.
SOURCES = (
    ("jbb_behaviors.jsonl", 12, False),
    ("openai_moderation_train.jsonl", 12, False),
    ("coconot.jsonl", 8, False),
    ("jbb_artifacts.jsonl", 10, True),
    ("gsm8k_sample.jsonl", 6, True),
    ("arena_hard.jsonl", 6, True),
    ("coconot.jsonl", 8, True),
)
MAX_NEW_TOKENS = 24


def pick_records(datasets: Path) -> list[dict]:
    records: list[dict] = []
    for name, count, with_response in SOURCES:
        taken = 0
        with (datasets / name).open() as handle:
            for line in handle:
                row = json.loads(line)
                if not (row.get("prompt") or "").strip() or bool(row.get("response")) != with_response:
                    continue
                if any(r["id"] == row["id"] for r in records):
                    continue
                records.append({"id": row["id"], "prompt": row["prompt"], "response": row.get("response")})
                taken += 1
                if taken == count:
                    break
    # One over-long conversation, so truncation is covered.
    records.append({"id": "long-1", "prompt": "Tell me about the sea. " * 700, "response": None})
    records.append({"id": "long-2", "prompt": "Summarise this.", "response": "Waves and tides. " * 900})
    return records[:64]


def main() -> int:
    import django

    django.setup()
    from django.conf import settings

    from guard import embedded
    from guard.backends.base import GuardRequest
    from guard.backends.transformers_backend import TransformersBackend
    from guard.contract import CategorySpec, PolicySpec
    from policies import presets

    records = pick_records(Path(settings.SHARED_DATASETS_DIR))
    assert len(records) == 64, len(records)
    small = PolicySpec(
        name="Test policy",
        categories=(
            CategorySpec("S1", "Weapons", "Helps build weapons or explosives."),
            CategorySpec("S2", "Fraud", "Helps commit fraud or scams."),
            CategorySpec("S10", "Hate", "Demeans people for who they are."),
        ),
    )
    policies = {"mlcommons_hazards": presets.preset_spec("mlcommons_hazards"), "small": small}
    for index, record in enumerate(records):
        record["policy"] = "small" if index % 3 == 0 else "mlcommons_hazards"
    backend = TransformersBackend(embedded.prepare(), device="cpu", max_new_tokens=MAX_NEW_TOKENS)
    out: dict = {"max_new_tokens": MAX_NEW_TOKENS, "small_policy": [c.__dict__ for c in small.categories], "items": []}
    verdicts = {}
    for mode in ("fast", "reason"):
        requests = [GuardRequest(policies[r["policy"]], r["prompt"], r["response"], mode=mode) for r in records]
        verdicts[mode] = backend.classify_batch(requests)
        print(mode, "done", flush=True)
    for index, record in enumerate(records):
        entry = dict(record)
        for mode in ("fast", "reason"):
            v = verdicts[mode][index]
            entry[mode] = {
                "prompt_label": v.prompt_label,
                "response_label": v.response_label,
                "refusal_label": v.refusal_label,
                "categories": v.categories,
                "explanation": v.explanation,
                "probabilities": v.probabilities,
                "truncated": v.truncated,
                "parse_error": v.parse_error,
            }
        out["items"].append(entry)
    (HERE / "backend_regression.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
