"""scripts/train_default_guard.sh, GPU profile, end to end on a CPU (SMOKE=1: tiny model, 2 steps per stage).

Every stage the device session runs: data splits, SFT, GRPO, calibration, evaluation (base, adapter
before and after calibration, reason mode), the latent heads of the new adapter and the model card. It takes several minutes on two shared
cores, so it runs when GUARDSITE_SCRIPT_SMOKE=1 (a lead sets it before a device session; CI does not):

    GUARDSITE_SCRIPT_SMOKE=1 .venv/bin/pytest tests/trainer/test_default_guard_script.py
    # or by hand:
    SMOKE=1 OUT=/tmp/smoke DATA_DIR=/tmp/smoke-data bash scripts/train_default_guard.sh
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("GUARDSITE_SCRIPT_SMOKE") != "1",
                       reason="the whole GPU profile on a CPU takes minutes: set GUARDSITE_SCRIPT_SMOKE=1"),
]


def test_the_gpu_profile_runs_every_stage_and_writes_a_card_with_the_mix_and_licences(tmp_path):
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path / "out"), "DATA_DIR": str(tmp_path / "data"),
           "GUARDSITE_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run(["bash", "scripts/train_default_guard.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    out = tmp_path / "out"
    commands = (out / "commands.txt").read_text()
    for stage in ("--recipe sft", "--recipe grpo", "manage.py calibrate", "--mode reason", "manage.py fit_heads",
                  "bench/heads.py", "write_model_card.py", "heads_card.py"):
        assert stage in commands
    assert "--mix source.toxicchat_train=2" in commands and "--licences all" in commands
    report = json.loads((out / "reports" / "adapter-fast.json").read_text())
    assert {"policy_following", "first_code", "explanations", "categories_by_file"} <= set(report)
    card = (out / "card" / "README.md").read_text()
    assert "## Training mix" in card and "| source |" in card
    assert "## Use and licences" in card and "Non-commercial use only" in card
    assert "policy following" in card
    assert "## Latent heads" in card and "**Held-out figures**" in card
    heads = json.loads((out / "card" / "heads" / "heads.json").read_text())
    assert heads["tasks"]["prompt"]["kind"]  # fitted for the trained adapter, packaged with it
    training = json.loads((out / "card" / "training.json").read_text())
    assert [stage["provenance"]["recipe"] for stage in training["stages"]] == ["sft", "grpo"]
    assert not (REPO / "models" / "guardsite-guard-270m" / "card").exists()


def test_a_device_session_trains_in_one_call_and_brings_back_the_packaged_guard_in_the_next(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "SMOKE": "1", "OUT": str(results), "RUN": str(tmp_path / "run"),
           "DATA_DIR": str(tmp_path / "data"), "GUARDSITE_VAR_DIR": str(tmp_path / "var")}
    for phase in ("train", "finish"):
        done = subprocess.run(["bash", "scripts/gpu_session.sh", phase], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=3600)
        assert done.returncode == 0, (results / f"{phase}.log").read_text()[-4000:]
    assert "STOP_AFTER_TRAINING=1" in (results / "train.log").read_text()
    assert "kept" in (results / "finish.log").read_text()  # the second call reuses the first one's stages
    assert {"card.tar.gz", "adapter_model.safetensors", "train.log", "finish.log", "throughput.txt"} <= {
        p.name for p in results.iterdir()}
    listing = subprocess.run(["tar", "-tzf", str(results / "card.tar.gz")], capture_output=True, text=True).stdout
    for name in ("README.md", "adapter_config.json", "training.json", "reports/adapter-fast.json", "heads/heads.json",
                 "heads/heads.npz", "reports/heads-bench.json"):
        assert f"./{name}" in listing.split()
    assert "fast" in (results / "throughput.txt").read_text()
