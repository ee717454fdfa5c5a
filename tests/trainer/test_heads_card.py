"""scripts/heads_card.py: the heads' section of a model card, from the heads' record and bench/heads.py runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(prompt_f1: float, pairs: float, device: str | None = None) -> dict:
    """A bench/heads.py run of the heads alone (--no-logits), reduced to what the card reads
    (``device``: where its latency was measured; runs before it was recorded lack it)."""
    return {
        "reports": {"heads": {"categories": {"micro_f1": 60.0, "macro_f1": 50.0}}},
        "policy_following": {"heads": {"pair_accuracy": pairs, "code_accuracy": 80.0},
                             "heads+examples": {"pair_accuracy": 90.0, "code_accuracy": 95.0}},
        "latency_ms": {"heads": 100.0},
        "rows": [["toxicchat_train.jsonl", "prompt", 276, prompt_f1]],
        **({"latency_device": {"heads": device}} if device else {}),
    }


def write_card(tmp_path: Path, *previous: str, **extra: object) -> str:
    model = tmp_path / "model"
    (model / "heads").mkdir(parents=True)
    (model / "heads" / "heads.json").write_text(json.dumps({
        "info": {"fit_seconds": 120, "fit_records": 10, "tasks": {}},
        "layout": {"layers": [8, 12, 15], "similarity_layer": 16}, "tasks": {"prompt": {"kind": "mlp 3x64"}}, **extra,
    }))
    (tmp_path / "new.json").write_text(json.dumps(bench(70.0, 85.0, "NVIDIA H100 80GB HBM3")))
    (tmp_path / "old.json").write_text(json.dumps(bench(56.3, 79.2)))
    done = subprocess.run([sys.executable, "scripts/heads_card.py", "--model", str(model), "--bench", str(tmp_path / "new.json"),
                           *previous], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return (model / "README.md").read_text()


def test_the_card_compares_new_heads_with_the_heads_they_replace_file_by_file(tmp_path):
    card = write_card(tmp_path, "--previous-bench", str(tmp_path / "old.json"))
    assert "| file | task | n | heads F1 | previous heads F1 |" in card
    assert "| toxicchat_train.jsonl | prompt | 276 | 70.0 | 56.3 |" in card
    assert "| previous heads | 60.0 | 79.2% (code 80.0%) |" in card


def test_without_a_previous_run_the_card_shows_the_new_heads_alone(tmp_path):
    card = write_card(tmp_path)
    assert "| file | task | n | heads F1 |\n" in card and "previous" not in card


def test_each_latency_is_labelled_with_the_device_it_was_measured_on(tmp_path):
    card = write_card(tmp_path, "--previous-bench", str(tmp_path / "old.json"))
    assert "| heads | 60.0 | 85.0% (code 80.0%) | 90.0% (code 95.0%) | 100.0 (NVIDIA H100 80GB HBM3) |" in card
    assert "| previous heads | 60.0 | 79.2% (code 80.0%) | 90.0% (code 95.0%) | 100.0 (CPU) |" in card


def test_the_card_lists_what_the_response_peak_head_saw_and_under_which_licences(tmp_path):
    response_peak = {"min_tokens": 192, "max_tokens": 2048, "widths": [32, 64], "context_tokens": 128, "info": {
        "texts": {"padded": 700, "harmful": 240}, "seconds": 900.0, "benign_quantile": 0.99,
        "validation_flagged_percent": {"padded": 80.0, "long_harmless": None},
        "licences": {"CC-BY-NC-4.0 (upstream BeaverTails)": 120}, "files": {"gr_beavertails_test": 120}}}
    card = write_card(tmp_path, response_peak=response_peak)
    assert ("A **response peak head** reads every response longer than 192 tokens whole (up to 2048, after the first "
            "128 tokens of its prompt)") in card
    assert "flags on validation texts padded 80.0%." in card  # no figure for a kind it was not fitted on
    assert "| CC-BY-NC-4.0 (upstream BeaverTails) | 120 |" in card and "| gr_beavertails_test | 120 |" in card
