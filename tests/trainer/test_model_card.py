"""scripts/write_model_card.py: the shipped guard's card is generated from the run's own files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "docs" / "reports" / "embedded-fast-limit30.json"


def make_run(root: Path) -> Path:
    run = root / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "embedded", "r": 16, "lora_alpha": 32, "layers_to_transform": [10, 11, 12, 13, 14, 15, 16, 17]}))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    history = [{"step": step, "loss": 3.0 / step} for step in range(1, 21)]
    files = [{"name": "toxicchat_train.jsonl", "licence": "unknown (not listed in MANIFEST.md)", "path": "/x", "records": 9, "used": 4},
             {"name": "synthetic_refusal.jsonl", "licence": "unknown (not listed in MANIFEST.md)", "path": "/y", "records": 5, "used": 2}]
    provenance = {
        "recipe": "sft", "policy": "auto", "base_model_path": "/cache/gemma", "held_out": [],
        "hyperparameters": {"lora_rank": 16, "lora_layers": 8, "learning_rate": 3e-4, "batch_size": 4, "seed": 0,
                            "max_categories": 16, "max_text_tokens": 256},
        "data": {"files": files, "mix": {"total": 6, "labels": {"safe": 3, "unsafe": 3}, "explanations": {"composed": 6}}},
    }
    summary = {"steps": 20, "train_seconds": 400.0, "steps_per_second": 0.05, "device": {"device": "cpu", "threads": 2}}
    (run / "train_metrics.json").write_text(json.dumps({"summary": summary, "history": history, "provenance": provenance}))
    reports = root / "reports"
    reports.mkdir()
    for name in ("base-fast", "base-reason", "adapter-fast", "adapter-reason"):
        shutil.copy(REPORT, reports / f"{name}.json")
    (root / "MANIFEST.md").write_text("| file | licence |\n|---|---|\n| toxicchat_train.jsonl | CC-BY-NC-4.0 |\n"
                                      "| synthetic_refusal.jsonl | derived: MIT prompts |\n")
    (root / "commands.txt").write_text("python manage.py train --recipe sft --out run\npython manage.py evaluate --model x\n")
    return run


def write_card(root: Path, runs: Path | list[Path], *extra: str) -> Path:
    """Run scripts/write_model_card.py on make_run's files (one run, or the stages in order); the card's directory."""
    out = root / "card"
    stages = [runs] if isinstance(runs, Path) else runs
    done = subprocess.run(
        [sys.executable, "scripts/write_model_card.py", "--run", *map(str, stages), "--reports", str(root / "reports"),
         "--commands", str(root / "commands.txt"), "--manifest", str(root / "MANIFEST.md"), "--out", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_card_gives_targets_data_licences_commands_and_the_loss_curve(tmp_path):
    out = write_card(tmp_path, make_run(tmp_path), "--compute", "2 CPU cores")
    card = (out / "README.md").read_text()
    assert "| ToxicChat (prompt) | 72.4 | 0.0 (30) |" in card
    assert "| toxicchat_train.jsonl | CC-BY-NC-4.0 |" in card
    assert "python manage.py train --recipe sft --out run" in card
    assert "2 CPU cores" in card and "top 8 decoder layers" in card
    assert (out / "training-loss.svg").read_text().startswith("<svg")
    training = json.loads((out / "training.json").read_text())
    assert [f["licence"] for f in training["provenance"]["data"]["files"]] == ["CC-BY-NC-4.0", "derived: MIT prompts"]
    assert "base_model_path" not in training["provenance"]  # no machine-specific paths in the shipped record
    assert sorted(p.name for p in (out / "reports").iterdir()) == [
        "adapter-fast.json", "adapter-reason.json", "base-fast.json", "base-reason.json"]


def test_the_card_compares_with_the_previously_shipped_guard_target_by_target(tmp_path):
    run = make_run(tmp_path)
    reports = tmp_path / "reports"
    for mode in ("fast", "reason"):
        (reports / f"base-{mode}.json").rename(reports / f"previous-{mode}.json")
    card = (write_card(tmp_path, run) / "README.md").read_text()
    assert "| target | goal | previous fast | previous reason | **ours fast** | ours reason |" in card
    assert "| ToxicChat prompt F1 | ≥ 60 | 0.0 (30) | 0.0 (30) | 0.0 (30) | 0.0 (30) |" in card
    assert "| policy following: pair accuracy % | ≥ 85 |" in card


def test_a_calibrated_run_ships_its_calibration_and_the_card_shows_before_and_after(tmp_path):
    run = make_run(tmp_path)
    fitted = {"prompt": {"n": 300, "positives": 90, "f1_at_half": 20.0, "threshold": 0.1234, "f1_at_threshold": 61.5}}
    (run / "adapter" / "calibration.json").write_text(json.dumps(
        {"temperature": 1.5, "thresholds": {"prompt": 0.1234}, "fitted": fitted, "records": 300, "excluded_ids": 6}))
    (run / "training_ids.txt").write_text("a\nb\n")
    shutil.copy(REPORT, tmp_path / "reports" / "uncalibrated-fast.json")
    out = write_card(tmp_path, run)
    card = (out / "README.md").read_text()
    assert "## Calibration" in card and "| prompt | 300 | 90 | 20.0 | 0.1234 | 61.5 |" in card
    assert "| held-out task (fast) | F1 before | F1 after |" in card
    assert json.loads((out / "calibration.json").read_text())["thresholds"] == {"prompt": 0.1234}
    assert (out / "training_ids.txt").read_text() == "a\nb\n"


def test_heads_fitted_for_the_run_travel_with_its_adapter(tmp_path):
    run = make_run(tmp_path)
    (run / "adapter" / "heads").mkdir()
    (run / "adapter" / "heads" / "heads.json").write_text('{"fingerprint": "new"}')
    out = write_card(tmp_path, run)
    assert json.loads((out / "heads" / "heads.json").read_text()) == {"fingerprint": "new"}


def test_heads_of_the_adapter_a_card_replaces_are_removed_with_it(tmp_path):
    (tmp_path / "card" / "heads").mkdir(parents=True)
    (tmp_path / "card" / "heads" / "heads.json").write_text('{"fingerprint": "old"}')
    out = write_card(tmp_path, make_run(tmp_path))
    assert not (out / "heads").exists()


def test_a_two_stage_run_records_both_stages_one_curve_and_every_trained_id(tmp_path):
    first = make_run(tmp_path)
    (first / "training_ids.txt").write_text("a\nb\n")
    second = tmp_path / "run2"
    shutil.copytree(first, second)
    metrics = json.loads((second / "train_metrics.json").read_text())
    metrics["provenance"]["init_adapter"] = str(first / "adapter")
    metrics["provenance"]["hyperparameters"]["seed"] = 1
    (second / "train_metrics.json").write_text(json.dumps(metrics))
    (second / "training_ids.txt").write_text("b\nc\n")
    out = write_card(tmp_path, [first, second])
    training = json.loads((out / "training.json").read_text())
    assert [stage["stage"] for stage in training["stages"]] == [1, 2]
    assert [entry["step"] for entry in training["history"]] == list(range(1, 41))
    assert (out / "training_ids.txt").read_text().split() == ["a", "b", "c"]
    card = (out / "README.md").read_text()
    assert "Stage 2 (continuing stage 1)" in card and "160 examples" in card


def test_a_stage_that_continued_a_packaged_guard_keeps_its_stages_commands_and_trained_ids(tmp_path):
    first = make_run(tmp_path)
    (first / "training_ids.txt").write_text("a\nb\n")
    second = tmp_path / "run2"
    shutil.copytree(first, second)
    packaged = write_card(tmp_path, [first, second])  # the guard as shipped: two stages, no train_metrics.json
    third = tmp_path / "run3"
    shutil.copytree(first, third)
    metrics = json.loads((third / "train_metrics.json").read_text())
    metrics["provenance"]["init_adapter"] = str(packaged)
    (third / "train_metrics.json").write_text(json.dumps(metrics))
    (third / "training_ids.txt").write_text("d\n")
    shipped = tmp_path / "shipped"
    shutil.move(packaged, shipped)
    out = write_card(tmp_path, [shipped, third])
    training = json.loads((out / "training.json").read_text())
    assert [stage["stage"] for stage in training["stages"]] == [1, 2, 3]
    assert [entry["step"] for entry in training["history"]] == list(range(1, 61))
    assert (out / "training_ids.txt").read_text().split() == ["a", "b", "d"]
    assert training["commands"][0] == "# shipped, the guard the next stage continued:"
    assert "# this run:" in training["commands"]
    card = (out / "README.md").read_text()
    assert "Stage 3 (continuing stage 2)" in card and "240 examples" in card
