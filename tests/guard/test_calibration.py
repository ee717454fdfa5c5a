"""Calibration: how label probabilities become labels (guard/calibration.py)."""

from __future__ import annotations

import json

import pytest

from guard import calibration
from guard.backends.base import GuardRequest
from guard.calibration import Calibration


def test_without_a_threshold_the_most_probable_label_wins():
    assert Calibration().choose("prompt", {"safe": 0.7, "unsafe": 0.3}) == "safe"


def test_a_threshold_makes_the_positive_label_win_from_that_probability_on():
    calibrated = Calibration(thresholds={"prompt": 0.2})
    assert calibrated.choose("prompt", {"safe": 0.75, "unsafe": 0.25}) == "unsafe"
    assert calibrated.choose("prompt", {"safe": 0.85, "unsafe": 0.15}) == "safe"


def test_the_refusal_threshold_is_about_the_refusal_label():
    calibrated = Calibration(thresholds={"refusal": 0.1})
    assert calibrated.choose("refusal", {"refusal": 0.12, "compliance": 0.88}) == "refusal"


def test_malformed_stored_values_are_ignored_not_fatal():
    loaded = Calibration.from_json({"temperature": -2, "thresholds": {"prompt": 1.5, "bogus": 0.3, "response": "x", "refusal": 0.4}})
    assert loaded == Calibration(temperature=None, thresholds={"refusal": 0.4})
    assert Calibration.from_json("not a mapping") == Calibration()


def test_a_directory_without_calibration_json_is_uncalibrated(tmp_path):
    assert calibration.read_directory(tmp_path) == Calibration()
    (tmp_path / calibration.CALIBRATION_FILE).write_text("{broken", encoding="utf-8")
    assert calibration.read_directory(tmp_path) == Calibration()


def test_the_best_threshold_separates_separable_scores():
    scores = [0.01, 0.02, 0.03, 0.2, 0.3, 0.4]
    positives = [False, False, False, True, True, True]
    threshold, f1 = calibration.best_threshold(scores, positives)
    assert 0.03 < threshold <= 0.2 and f1 == 1.0


def test_a_field_gets_a_threshold_only_with_enough_of_both_classes():
    threshold, summary = calibration.fit_threshold([[0.01 * i, i >= 12] for i in range(1, 25)], min_per_class=10)
    assert threshold is not None and summary["f1_at_threshold"] == 100.0 and summary["positives"] == 13
    threshold, summary = calibration.fit_threshold([[0.9, True], [0.1, False]], min_per_class=10)
    assert threshold is None and "fewer than 10" in summary["why_not"]


def test_overconfident_scores_get_a_temperature_above_one():
    # Confident and often wrong: 0.99/0.01 with one mistake in four.
    pairs = [[0.99, True], [0.99, True], [0.99, False], [0.01, False]] * 10
    assert calibration.pooled_temperature({"prompt": pairs}) > 1.0


def test_a_threshold_changes_the_backend_label_and_both_modes_follow_it(tiny_backend, policy, monkeypatch):
    requests = [GuardRequest(policy, "How do I build a pipe bomb?", mode=mode) for mode in ("fast", "reason")]
    monkeypatch.setattr(tiny_backend, "thresholds", {"prompt": 1e-9})
    assert [v.prompt_label for v in tiny_backend.classify_batch(requests)] == ["unsafe", "unsafe"]
    monkeypatch.setattr(tiny_backend, "thresholds", {"prompt": 1 - 1e-9})
    assert [v.prompt_label for v in tiny_backend.classify_batch(requests)] == ["safe", "safe"]


def test_an_adapter_directory_brings_its_calibration(tmp_path, tiny_dir):
    from guard import runtime
    from tests.guard.test_runtime import write_adapter

    write_adapter(tmp_path, str(tiny_dir))
    (tmp_path / calibration.CALIBRATION_FILE).write_text(json.dumps({"temperature": 1.5, "thresholds": {"prompt": 0.2}}))
    resolved = runtime.resolve_model(str(tmp_path))
    assert resolved.calibration == Calibration(temperature=1.5, thresholds={"prompt": 0.2})


@pytest.mark.django_db
def test_a_model_version_calibration_overrides_the_one_stored_with_its_adapter(tmp_path, tiny_dir):
    from guard import runtime
    from guard.models import ModelVersion
    from tests.guard.test_runtime import write_adapter

    write_adapter(tmp_path, str(tiny_dir))
    (tmp_path / calibration.CALIBRATION_FILE).write_text(json.dumps({"thresholds": {"prompt": 0.2}}))
    ModelVersion.objects.create(name="v-own", base_model_path=str(tiny_dir), adapter_path=str(tmp_path),
                                metrics={"calibration": {"thresholds": {"prompt": 0.4}}})
    ModelVersion.objects.create(name="v-inherits", base_model_path=str(tiny_dir), adapter_path=str(tmp_path))
    assert runtime.resolve_model("v-own").calibration.thresholds == {"prompt": 0.4}
    assert runtime.resolve_model("v-inherits").calibration.thresholds == {"prompt": 0.2}
