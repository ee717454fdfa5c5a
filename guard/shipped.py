"""The guard Guardsite ships: a LoRA adapter on the embedded Gemma 3 270M, committed
under ``models/guardsite-guard-270m/`` with its model card, training record and
evaluation reports.

It is the deployment default (``settings.GUARD_MODEL_DIR`` falls back to it when
the directory holds an adapter) and ``demo_setup`` registers it in the model
registry as the production model of the default policy. ``GUARD_MODEL_DIR=embedded``
selects the untrained base instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings

SHIPPED_NAME = "guardsite-guard-270m"
TRAINING_FILE = "training.json"
REPORTS_DIR = "reports"


def shipped_dir() -> Path:
    # One definition of the place: settings needs it first, for the GUARD_MODEL_DIR default.
    return Path(settings.SHIPPED_GUARD_DIR)


def shipped_adapter_dir() -> Path | None:
    """The committed adapter directory, or None in a checkout that has none."""
    directory = shipped_dir()
    return directory if (directory / "adapter_config.json").is_file() else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def shipped_reports() -> dict[str, Any]:
    """{report file stem: report} for the evaluation reports committed beside the adapter."""
    directory = shipped_dir() / REPORTS_DIR
    if not directory.is_dir():
        return {}
    return {path.stem: _read_json(path) for path in sorted(directory.glob("*.json"))}


def register_shipped_model() -> Any:
    """Create or refresh the registry entry of the shipped guard; None when there is none.

    Provenance (data, licences, recipe, commands, compute) comes from
    ``training.json``; the metrics are the committed evaluation reports.
    """
    from guard.models import ModelVersion

    directory = shipped_adapter_dir()
    if directory is None:
        return None
    training = _read_json(directory / TRAINING_FILE)
    # The registry page reads a training job's provenance layout: recipe, hyperparameters, data, command.
    provenance = dict(training.get("provenance") or {})
    commands = [line for line in training.get("commands") or [] if "manage.py train" in line]
    if commands:
        provenance["command"] = commands[-1]
    provenance["compute"] = training.get("compute", "")
    # A stage continued from an earlier adapter keeps that adapter's rank and layers, whatever its
    # options said: record what the saved adapter is (its adapter_config.json).
    config = _read_json(directory / "adapter_config.json")
    if isinstance(provenance.get("hyperparameters"), dict) and config.get("r"):
        layers = config.get("layers_to_transform")
        provenance["hyperparameters"] = {**provenance["hyperparameters"], "lora_rank": int(config["r"]),
                                         "lora_layers": len(layers) if isinstance(layers, list) else 0}
    provenance["model_card"] = str(directory / "README.md")
    reports = shipped_reports()
    metrics: dict[str, Any] = {}
    adapter_reports = {stem: report for stem, report in reports.items() if stem.startswith("adapter-")}
    if adapter_reports:
        # The registry shows "report": the fast-mode one, the mode the moderation queue runs by default.
        preferred = next((r for stem, r in adapter_reports.items() if "fast" in stem), next(iter(adapter_reports.values())))
        metrics = {"report": preferred, "reports": adapter_reports}
    version, created = ModelVersion.objects.update_or_create(
        name=SHIPPED_NAME,
        defaults={"base_model_path": "embedded", "adapter_path": str(directory), "provenance": provenance, "metrics": metrics},
    )
    if created:
        # It serves from now on: the registry can roll back to it like to any promoted model.
        from django.utils import timezone

        version.status = ModelVersion.Status.PRODUCTION
        version.promoted_at = timezone.now()
        version.save(update_fields=["status", "promoted_at"])
    return version
