"""The shipped guard's training record and the card's sections drawn from it (``scripts/write_model_card.py``).

The record joins every training stage (each ``--init`` the one before, or a packaged guard a stage continued):
their provenance, one loss history, the licences of every example seen. Kept apart from the card's layout so
the provenance rules live in one place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# Imported by write_model_card.py, which puts the repository root on sys.path first.
from guard.calibration import CALIBRATION_FILE
from guard.heads import HEADS_DIR
from trainer.charts import line_chart
from trainer.data import TRAINING_IDS_FILE, parse_manifest
from trainer.licences import licence_id, usage_statement
from trainer.mix import markdown_table


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_training_ids(runs: list[Path], out: Path) -> None:
    """Every record id any stage trained on (what calibration and evaluation must leave out)."""
    ids: set[str] = set()
    for run in runs:
        if (run / TRAINING_IDS_FILE).is_file():
            ids.update((run / TRAINING_IDS_FILE).read_text(encoding="utf-8").split())
    if ids:
        (out / TRAINING_IDS_FILE).write_text("".join(f"{i}\n" for i in sorted(ids)), encoding="utf-8")


def copy_adapter(run: Path, out: Path) -> None:
    adapter = run / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, out / name)
    calibration = adapter / CALIBRATION_FILE
    if calibration.is_file():
        shutil.copy(calibration, out / CALIBRATION_FILE)
    else:
        (out / CALIBRATION_FILE).unlink(missing_ok=True)  # a stale fit must not outlive its adapter
    # The latent heads read this adapter's hidden states: they travel with it, and heads fitted for the adapter
    # this card replaces go (serving would refuse them and fall back to the logits).
    shutil.rmtree(out / HEADS_DIR, ignore_errors=True)
    if (adapter / HEADS_DIR / "heads.json").is_file():
        shutil.copytree(adapter / HEADS_DIR, out / HEADS_DIR)


def training_record(runs: list[Path], manifest: Path, commands: list[str], compute: str) -> dict[str, Any]:
    """The record of the training stages (each ``--init`` the one before): the last stage's summary and
    provenance, every stage's own, and one loss history with steps counted from the first stage."""
    licences = parse_manifest(manifest)
    stages: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    earlier_commands: list[str] = []
    for run in runs:
        offset = max((entry["step"] for entry in history if "step" in entry), default=0)
        if not (run / "train_metrics.json").is_file() and (run / "training.json").is_file():
            # A packaged guard (a models/ directory) that the next stage continued: its stages, history and
            # commands come first, so the card still lists everything the adapter saw.
            packaged = read(run / "training.json")
            before = len(stages)
            stages += [{**stage, "stage": stage["stage"] + before} for stage in packaged.get("stages") or [
                {"stage": 1, "summary": packaged["summary"], "provenance": packaged["provenance"]}]]
            history += [{**entry, "step": entry["step"] + offset, "stage": entry.get("stage", 1) + before}
                        if "step" in entry else entry for entry in packaged["history"]]
            earlier_commands += [f"# {run.name}, the guard the next stage continued:", *packaged.get("commands", [])]
            continue
        number = len(stages) + 1
        metrics = read(run / "train_metrics.json")
        provenance = metrics["provenance"]
        # Licences as the data's MANIFEST states them (also fills runs made before the split carried one).
        for entry in provenance["data"]["files"]:
            entry["licence"] = licences.get(entry["name"], entry["licence"])
            entry.pop("path", None)
        provenance.pop("base_model_path", None)
        provenance.pop("held_out", None)
        history += [{**entry, "step": entry["step"] + offset, "stage": number} if "step" in entry else entry
                    for entry in metrics["history"]]
        stages.append({"stage": number, "summary": metrics["summary"], "provenance": provenance})
    if earlier_commands:
        commands = [*earlier_commands, "# this run:", *commands]
    record: dict[str, Any] = {"summary": stages[-1]["summary"], "history": history, "provenance": stages[-1]["provenance"],
                              "commands": commands, "compute": compute}
    if len(stages) > 1:
        record["stages"] = stages
    return record


def examples_seen(training: dict[str, Any]) -> int:
    stages = training.get("stages") or [{"summary": training["summary"], "provenance": training["provenance"]}]
    return sum(st["summary"]["steps"] * st["provenance"]["hyperparameters"]["batch_size"]
               * st["provenance"]["hyperparameters"].get("grad_accum", 1) for st in stages)


def stage_lines(training: dict[str, Any]) -> list[str]:
    """One line per training stage, when there was more than one."""
    lines = []
    for stage in training.get("stages") or []:
        hp, summary, prov = stage["provenance"]["hyperparameters"], stage["summary"], stage["provenance"]
        start = f"continuing stage {stage['stage'] - 1}" if prov.get("init_adapter") else "from the base"
        lines.append(f"- Stage {stage['stage']} ({start}): {prov['recipe']}, {summary['steps']} steps at batch {hp['batch_size']}, "
                     f"learning rate {hp['learning_rate']}, seed {hp['seed']}, {summary['train_seconds']:.0f} s.")
    return lines


def loss_chart(history: list[dict[str, Any]]) -> str:
    points = [(entry["step"], entry["loss"]) for entry in history if isinstance(entry.get("loss"), int | float)]
    window = 10
    smooth = [(points[i][0], sum(v for _, v in points[max(0, i - window + 1): i + 1]) / len(points[max(0, i - window + 1): i + 1]))
              for i in range(len(points))]
    return str(line_chart("SFT loss (answer tokens), per step and 10-step mean", [("loss", points), ("mean", smooth)]))


def lora_description(config: dict[str, Any]) -> str:
    """From the shipped adapter_config.json itself: a continued stage's hyperparameters do not describe
    the adapter (``--init`` keeps the first stage's rank and layers)."""
    layers = config.get("layers_to_transform")
    where = f"the top {len(layers)} decoder layers" if layers else "every decoder layer"
    return f"LoRA rank {config.get('r')} (alpha {config.get('lora_alpha')}), all linear layers of {where}"


def trained_licences(training: dict[str, Any]) -> dict[str, int]:
    """Licence id -> examples, over every stage (the examples' own licences; files' for older runs)."""
    stages = training.get("stages") or [{"provenance": training["provenance"]}]
    counts: dict[str, int] = {}
    for stage in stages:
        data = stage["provenance"]["data"]
        per_example = (data.get("mix") or {}).get("licences")
        if per_example:
            for licence, n in per_example.items():
                counts[licence] = counts.get(licence, 0) + n
            continue
        for entry in data["files"]:
            if entry.get("used"):
                key = licence_id(entry.get("licence"))
                counts[key] = counts.get(key, 0) + entry["used"]
    return dict(sorted(counts.items()))


def licence_lines(training: dict[str, Any]) -> list[str]:
    counts = trained_licences(training)
    allowlist = (training["provenance"]["data"].get("mix") or {}).get("licence_allowlist", "all")
    lines = ["## Use and licences", "", usage_statement(counts), "",
             f"Licences of everything the adapter saw (examples, all stages; allowlist `{allowlist}`):", "",
             "| licence | examples |", "|---|---|"]
    lines += [f"| {licence} | {n} |" for licence, n in counts.items()]
    return [*lines, ""]


def mix_lines(training: dict[str, Any]) -> list[str]:
    """The realised mix of the first stage (the SFT that sets the labels; later stages draw theirs the same way)."""
    first = (training.get("stages") or [training])[0]["provenance"]
    mix = first["data"].get("mix") or {}
    if not mix.get("table"):
        return []
    lines = ["## Training mix", "", f"Realised task x label x source counts of stage 1 ({first['recipe']}; `trainer/mix.py`,"
             " the builder prints the same table):", "", *markdown_table(mix["table"]), ""]
    summary = mix.get("summary") or {}
    if summary.get("tasks"):
        lines.append("Tasks: " + ", ".join(f"{task} {v['n']} ({100 * v['share']:.1f}% of examples, positive "
                                           f"{100 * v['positive_share']:.1f}%)" for task, v in summary["tasks"].items()) + ".")
    if mix.get("masked_fields"):
        lines.append(f"Answer fields without gold, masked in the loss: {mix['masked_fields']}; derived labels: "
                     f"{mix.get('derived_fields') or {}}.")
    return [*lines, ""]
