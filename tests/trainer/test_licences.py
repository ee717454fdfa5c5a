"""Data licences: every example carries its source's licence, runs take an allowlist, the card says what follows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import record, write_jsonl
from tests.trainer.test_model_card import make_run
from trainer import data, licences

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("cell", "expected"), [
    ("MIT", "MIT"),
    ("CC-BY-4.0 for the data", "CC-BY-4.0"),
    ("CC-BY-NC-4.0 (upstream BeaverTails)", "CC-BY-NC-4.0"),
    ("MIT + CDLA-Permissive-2.0", "MIT + CDLA-Permissive-2.0"),
    ("MIT (code) + CDLA-Permissive-2.0 (data), both in LICENSE.txt", "MIT + CDLA-Permissive-2.0"),
    ("data CC-BY-NC-4.0 (README 'Data License' badge), code Apache-2.0; non-commercial", "CC-BY-NC-4.0"),
    ("unknown in the copy (no licence file next to it); HF mirrors tag it MIT", "unknown"),
    ("", "unknown"),
    ("Apache-2.0 (repository LICENSE); README: RESEARCH USE ONLY", "Apache-2.0"),
])
def test_manifest_licence_cells_map_to_spdx_ids(cell, expected):
    assert licences.licence_id(cell) == expected


def test_permissive_allows_mit_apache_cc_by_and_cdla_but_not_non_commercial_or_unknown():
    allowlist = licences.parse_allowlist("permissive")
    for ok in ("MIT", "Apache-2.0", "CC-BY-4.0", "CDLA-Permissive-2.0", "MIT + CDLA-Permissive-2.0"):
        assert licences.allowed(ok, allowlist), ok
    for refused in ("CC-BY-NC-4.0", "unknown", "MIT + CC-BY-NC-4.0", "CC-BY-SA-4.0"):
        assert not licences.allowed(refused, allowlist), refused
    assert licences.allowed("unknown", licences.parse_allowlist("permissive,unknown"))
    assert licences.parse_allowlist("all") is None and licences.allowed("CC-BY-NC-4.0", None)


def test_every_example_carries_its_files_licence(corpus):
    built = data.build_dataset([str(corpus)], holdout_percent=0, max_examples=None)
    by_source = {e.source: e.licence for e in built.examples}
    assert by_source == {"mini": "MIT", "chat": "CC-BY-4.0"}
    assert built.mix["licences"] == {"CC-BY-4.0": 5, "MIT": 12}
    assert {f.name: f.licence_id for f in built.files} == {"chat.jsonl": "CC-BY-4.0", "mini.jsonl": "MIT"}


def test_an_allowlist_leaves_out_the_files_it_does_not_name_and_says_so(corpus):
    (corpus / "MANIFEST.md").write_text("| file | licence |\n|---|---|\n| mini.jsonl | MIT |\n| chat.jsonl | CC-BY-NC-4.0 |\n")
    built = data.build_dataset([str(corpus)], holdout_percent=0, max_examples=None, licences="permissive")
    assert {e.source for e in built.examples} == {"mini"}
    chat = next(f for f in built.files if f.name == "chat.jsonl")
    assert chat.skipped == {"licence CC-BY-NC-4.0 not in the allowlist": 1} and chat.used == 0
    assert built.mix["licence_allowlist"] == "permissive"


def test_an_allowlist_that_leaves_nothing_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "nc.jsonl", [record("n1", "hello", prompt_label="safe", taxonomy="none")])
    (tmp_path / "MANIFEST.md").write_text("| file | licence |\n|---|---|\n| nc.jsonl | CC-BY-NC-4.0 |\n")
    with pytest.raises(ValueError, match="licence allowlist 'MIT'"):
        data.build_dataset([str(tmp_path)], holdout_percent=0, max_examples=None, licences="MIT")


def test_generated_policy_flips_keep_the_licence_of_the_record_they_were_made_from(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl")], holdout_percent=0, max_examples=40, seed=2,
                               mix="policy_flip=0.2,cap=1")
    flips = [e for e in built.examples if e.source == data.GENERATED_POLICY_FLIP]
    assert flips and all(e.licence == "MIT" for e in flips)
    generated = [e for e in built.examples if e.source == data.GENERATED_POLICY_FOLLOWING]
    assert generated and all(e.licence == "Apache-2.0" for e in generated)


def _card(tmp_path: Path, example_licences: dict[str, int]) -> str:
    run = make_run(tmp_path)
    metrics = json.loads((run / "train_metrics.json").read_text())
    metrics["provenance"]["data"]["mix"]["licences"] = example_licences
    metrics["provenance"]["data"]["mix"]["licence_allowlist"] = "all"
    (run / "train_metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "card"
    done = subprocess.run(
        [sys.executable, "scripts/write_model_card.py", "--run", str(run), "--reports", str(tmp_path / "reports"),
         "--commands", str(tmp_path / "commands.txt"), "--manifest", str(tmp_path / "MANIFEST.md"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    card = (out / "README.md").read_text()
    shutil.rmtree(tmp_path / "card")
    return card


def test_the_card_lists_every_licence_seen_and_says_non_commercial_when_nc_data_was_used(tmp_path):
    card = _card(tmp_path, {"CC-BY-NC-4.0": 3, "MIT": 5})
    assert "**Non-commercial use only**" in card
    assert "| CC-BY-NC-4.0 | 3 |" in card and "| MIT | 5 |" in card
    assert "## Why this data" in card and "--licences all" in card


def test_the_card_does_not_restrict_use_when_every_licence_is_permissive(tmp_path):
    card = _card(tmp_path, {"Apache-2.0": 2, "MIT": 5})
    assert "Non-commercial" not in card and "non-commercial use only" not in card.lower()
    assert "permissive licence" in card


def test_the_train_command_accepts_a_licence_allowlist_and_refuses_an_empty_item(tmp_path, corpus):
    from trainer.settings import TrainingError, TrainSettings

    assert TrainSettings(recipe="sft", data=[str(corpus)], out_dir=str(tmp_path), licences="permissive").licences == "permissive"
    with pytest.raises(TrainingError, match="empty item"):
        TrainSettings(recipe="sft", data=[str(corpus)], out_dir=str(tmp_path), licences="MIT,,Apache-2.0")
