from __future__ import annotations

import json
import time
from argparse import ArgumentParser, BooleanOptionalAction
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from evaluation.harness import AUTO_POLICY, EvaluationError, evaluate, format_summary
from guard.calibration import Calibration
from guard.contract import MODES


class Command(BaseCommand):
    help = (
        "Evaluate a guard model on benchmark JSONL files (shared corpus schema) and write report.json: "
        "F1/precision/recall per task and file, category micro/macro F1, items/s, words per explanation."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--data", nargs="+", required=True, metavar="PATH", help="JSONL files or directories of them")
        parser.add_argument("--model", required=True, help="'embedded', a registered model name, or a local model/adapter directory")
        parser.add_argument("--mode", choices=MODES, default="fast")
        parser.add_argument("--policy", default=AUTO_POLICY, help="'auto' (each record under its own taxonomy), a policy slug or a preset name")
        parser.add_argument("--limit", type=int, default=None, help="at most N records per file (deterministic, label-stratified sample)")
        parser.add_argument("--limit-for", action="append", default=[], metavar="FILE=N",
                            help="a different limit for one file (repeatable; N or 'all'), e.g. toxicchat_train=all")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--uncalibrated", action="store_true",
                            help="ignore the model's calibration: the most probable label wins (what calibration changed)")
        parser.add_argument("--policy-following", action=BooleanOptionalAction, default=True,
                            help="also judge the committed policy-following pairs (evaluation/policy_following.jsonl) "
                                 "and report them under policy_following (default: on)")
        parser.add_argument("--policy-following-pairs", type=int, default=None, metavar="N",
                            help="judge only the first N policy-following pairs (quick checks; default: all)")
        parser.add_argument("--heads", action=BooleanOptionalAction, default=True,
                            help="--no-heads: judge with the label logits although the model has latent heads "
                                 "(to compare it with a model that has none)")
        parser.add_argument("--out", required=True, help="where to write the report (JSON)")

    def handle(self, *args: Any, **options: Any) -> None:
        out = Path(options["out"]).expanduser()
        if not out.parent.is_dir():
            raise CommandError(f"--out: directory {str(out.parent)!r} does not exist")
        progress = progress_printer(self.stderr.write)
        file_limits = parse_file_limits(options["limit_for"])
        try:
            report = evaluate(
                options["data"],
                options["model"],
                mode=options["mode"],
                policy=options["policy"],
                limit=options["limit"],
                batch_size=options["batch_size"],
                progress=progress,
                file_limits=file_limits,
                calibration=Calibration() if options["uncalibrated"] else None,
                heads=options["heads"],
            )
            if options["policy_following"]:
                from evaluation.policy_following import evaluate_policy_following

                self.stderr.write("policy-following pairs")
                report["policy_following"] = evaluate_policy_following(
                    options["model"], options["mode"], options["batch_size"],
                    calibration=Calibration() if options["uncalibrated"] else None,
                    limit=options["policy_following_pairs"], heads=options["heads"],
                )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            from guard.backends.base import GuardError

            if isinstance(exc, GuardError | FileNotFoundError):
                raise CommandError(f"--model {options['model']!r}: {exc}") from None
            raise
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.stdout.write(format_summary(report))
        self.stdout.write(f"report written to {out}")


def progress_printer(write: Callable[[str], Any], every_s: float = 5.0) -> Callable[[int, int], None]:
    """A harness progress callback writing ``done/total records`` at most every ``every_s`` seconds."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= every_s:
            last[0] = now
            write(f"{done}/{total} records")

    return progress


def parse_file_limits(values: list[str]) -> dict[str, int | None]:
    """``["toxicchat_train=all", "advbench.jsonl=40"]`` -> ``{"toxicchat_train": None, "advbench.jsonl": 40}``."""
    limits: dict[str, int | None] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--limit-for {value!r}: expected FILE=N or FILE=all")
        number = number.strip()
        if number == "all":
            limits[name.strip()] = None
            continue
        try:
            limits[name.strip()] = int(number)
        except ValueError:
            raise CommandError(f"--limit-for {value!r}: N must be a whole number or 'all'") from None
    return limits
