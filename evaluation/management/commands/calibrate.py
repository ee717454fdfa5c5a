from __future__ import annotations

import json
import shlex
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from evaluation.harness import AUTO_POLICY, EvaluationError, evaluate
from evaluation.management.commands.evaluate import parse_file_limits, progress_printer
from evaluation.records import EvalRecord
from guard import calibration, contract
from guard.calibration import Calibration

# Answer order: each field is fitted under the thresholds of the fields before it.
FIELDS = (contract.FIELD_PROMPT, contract.FIELD_RESPONSE, contract.FIELD_REFUSAL)


class Command(BaseCommand):
    help = (
        "Fit a guard model's decision thresholds (and temperature) on labelled records it was not trained on, "
        "and store them with the model: calibration.json in a model/adapter directory, or the registered "
        "version's metrics. See guard/calibration.py."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="a local model/adapter directory or a registered model name")
        parser.add_argument("--data", nargs="+", required=True, metavar="PATH",
                            help="labelled JSONL files or directories: NOT the held-out evaluation split")
        parser.add_argument("--exclude-ids", action="append", default=[], metavar="FILE",
                            help="a file of record ids to leave out, one per line (repeatable), e.g. the run's training_ids.txt")
        parser.add_argument("--policy", default=AUTO_POLICY)
        parser.add_argument("--limit", type=int, default=None, help="at most N records per file (label-stratified sample)")
        parser.add_argument("--limit-for", action="append", default=[], metavar="FILE=N")
        parser.add_argument("--min-per-class", type=int, default=10,
                            help="a field gets a threshold only with at least this many positive and negative records")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--dry-run", action="store_true", help="print the fit, store nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        from guard import runtime
        from guard.backends.base import GuardError

        model = options["model"]
        try:
            resolved = runtime.resolve_model(model)
        except GuardError as exc:
            raise CommandError(f"--model {model!r}: {exc}") from None
        exclude = read_id_files(options["exclude_ids"])
        file_limits = parse_file_limits(options["limit_for"])

        last_pass: list[tuple[Calibration, dict[str, Any]]] = []

        def response_scores(under: Calibration) -> dict[str, Any]:
            """The response records scored under ``under``; an unchanged calibration reuses the last pass."""
            if not (last_pass and last_pass[0][0] == under):
                last_pass[:] = [(under, scores(under, responses_only=True)["scores"])]
            return last_pass[0][1]

        def scores(under: Calibration, *, responses_only: bool) -> dict[str, Any]:
            self.stderr.write(f"scoring {'records with a response' if responses_only else 'every record'} under {under.to_json()}")
            try:
                return evaluate(
                    options["data"], model, mode="fast", policy=options["policy"], limit=options["limit"],
                    batch_size=options["batch_size"], progress=progress_printer(self.stderr.write), file_limits=file_limits,
                    exclude_ids=exclude, keep_scores=True, calibration=under,
                    record_filter=with_response if responses_only else None,
                )
            except EvaluationError as exc:
                raise CommandError(str(exc)) from None

        # Pass 1, raw probabilities of every record: the temperature, then the prompt threshold.
        first = scores(Calibration(), responses_only=False)
        temperature = calibration.pooled_temperature(first["scores"])
        fitted = Calibration(temperature=temperature)
        summary: dict[str, Any] = {}
        for name in FIELDS:
            if name == contract.FIELD_PROMPT:
                pairs = [[calibration.rescale(p, temperature or 1.0), gold] for p, gold in first["scores"][name]]
            elif first["scores"].get(name):
                # Later passes: only the records with a response, under what is fitted so far.
                pairs = response_scores(fitted)[name]
            else:
                pairs = []
            threshold, summary[name] = calibration.fit_threshold(pairs, min_per_class=options["min_per_class"])
            if threshold is not None:
                fitted = Calibration(fitted.temperature, {**fitted.thresholds, name: threshold})
        stored = {
            **fitted.to_json(),
            "fitted": summary,
            "data": first["data"],
            "records": first["n"],
            "excluded_ids": len(exclude),
            "command": "python manage.py calibrate " + shlex.join(sys.argv[2:]),
        }
        self.stdout.write(format_fit(fitted, summary))
        if options["dry_run"]:
            return
        self.stdout.write(f"stored in {store(model, resolved, stored)}")


def with_response(record: EvalRecord) -> bool:
    return record.has_response


def read_id_files(paths: list[str]) -> set[str]:
    ids: set[str] = set()
    for name in paths:
        try:
            text = Path(name).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--exclude-ids {name!r}: {exc.strerror or exc}") from None
        ids.update(line.strip() for line in text.splitlines() if line.strip())
    return ids


def store(model: str, resolved: Any, stored: dict[str, Any]) -> str:
    """Into the directory ``model`` names, else into the registered version's metrics."""
    directory = Path(model).expanduser()
    if directory.is_dir():
        target = directory / calibration.CALIBRATION_FILE
        target.write_text(json.dumps(stored, indent=1) + "\n", encoding="utf-8")
        return str(target)
    from guard.models import ModelVersion

    version = ModelVersion.objects.get(name=resolved.label)
    version.metrics = {**(version.metrics or {}), "calibration": stored}
    version.save(update_fields=["metrics"])
    return f"model version {version.name!r} (metrics.calibration)"


def format_fit(fitted: Calibration, summary: dict[str, Any]) -> str:
    lines = [f"temperature {fitted.temperature or 1.0}", f"{'field':<10}{'n':>6}{'pos':>6}{'F1@0.5':>9}{'threshold':>11}{'F1@thr':>8}"]
    for name, entry in summary.items():
        threshold = entry.get("threshold")
        lines.append(
            f"{name:<10}{entry['n']:>6}{entry['positives']:>6}{entry['f1_at_half']:>9.1f}"
            + (f"{threshold:>11.4f}{entry['f1_at_threshold']:>8.1f}" if threshold is not None else f"{'-':>11}{'-':>8}")
        )
    return "\n".join(lines)
