"""``manage.py calibrate``: fit a model's thresholds on records it never saw and store them with it."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from guard.models import ModelVersion


@pytest.fixture
def tiny_version(db, tiny_model) -> ModelVersion:
    return ModelVersion.objects.create(name="tiny-cal", base_model_path=tiny_model)


def test_calibrate_stores_the_fit_in_the_model_version_with_how_it_was_made(tiny_version, small_benchmark):
    call_command("calibrate", "--model", "tiny-cal", "--data", str(small_benchmark), "--min-per-class", "1")
    stored = ModelVersion.objects.get(pk=tiny_version.pk).metrics["calibration"]
    assert set(stored["thresholds"]) <= {"prompt", "response", "refusal"}
    assert stored["fitted"]["prompt"]["n"] > 0
    assert stored["command"].startswith("python manage.py calibrate") and stored["data"]


def test_excluded_ids_are_left_out_of_the_fit(tiny_version, small_benchmark, tmp_path):
    ids = tmp_path / "training_ids.txt"
    ids.write_text("p1\np2\n", encoding="utf-8")
    out = StringIO()
    call_command("calibrate", "--model", "tiny-cal", "--data", str(small_benchmark), "--exclude-ids", str(ids),
                 "--dry-run", stdout=out)
    prompt_row = next(line.split() for line in out.getvalue().splitlines() if line.startswith("prompt"))
    assert prompt_row[1] == "5"  # 7 prompt records, 2 excluded
    assert "calibration" not in ModelVersion.objects.get(pk=tiny_version.pk).metrics  # a dry run stores nothing


def test_a_missing_id_file_is_a_clear_error(tiny_version, small_benchmark):
    with pytest.raises(CommandError, match="--exclude-ids 'no/such/file.txt'"):
        call_command("calibrate", "--model", "tiny-cal", "--data", str(small_benchmark), "--exclude-ids", "no/such/file.txt")


def test_an_unknown_model_is_a_clear_error(db, small_benchmark):
    with pytest.raises(CommandError, match="--model 'nope'"):
        call_command("calibrate", "--model", "nope", "--data", str(small_benchmark))


def test_a_report_records_the_calibration_it_ran_under_and_uncalibrated_ignores_it(tiny_version, small_benchmark, tmp_path):
    tiny_version.metrics = {"calibration": {"temperature": 2.0, "thresholds": {"prompt": 0.3}}}
    tiny_version.save()
    calibrated, uncalibrated = tmp_path / "calibrated.json", tmp_path / "uncalibrated.json"
    call_command("evaluate", "--model", "tiny-cal", "--data", str(small_benchmark), "--out", str(calibrated))
    call_command("evaluate", "--model", "tiny-cal", "--data", str(small_benchmark), "--uncalibrated", "--out", str(uncalibrated))
    assert json.loads(calibrated.read_text())["calibration"] == {"temperature": 2.0, "thresholds": {"prompt": 0.3}}
    assert json.loads(uncalibrated.read_text())["calibration"] == {"temperature": None, "thresholds": {}}
