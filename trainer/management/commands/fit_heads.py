"""``python manage.py fit_heads``: fit a guard model's latent heads on a CPU (``trainer.heads``).

    python manage.py fit_heads --model models/guardsite-guard-270m --data var/data/train [--tune-epochs 6 [--tune-copies 2] [--tuned-rank 128]]
    python manage.py fit_heads --model models/guardsite-guard-270m --data var/data/train --add-peak [--peak-padded 700]
    python manage.py fit_heads --model models/guardsite-guard-270m --data var/data/train --add-response-peak

Features are cached per backbone (``GUARD_FEATURE_CACHE``), so a second fit of the same
model computes nothing and takes seconds; the heads are written to ``OUT/heads/``
(default: the model directory itself). ``--add-peak`` fits only a peak head on the model's tuned layers
(``trainer.peak_fitting``, about 18 minutes on 2 cores) and adds it to its heads, everything else kept: for heads
tuned before peak heads existed (tuning fits one with the layers). ``--add-response-peak`` does the same for the
response peak head (``trainer.response_peak_fitting``: harmful content inside a long answer).
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from django.core.management.base import BaseCommand, CommandError  # noqa: E402


class Command(BaseCommand):
    help = "Fit the latent heads (prompt, response, refusal, categories, zero-shot) of a guard model from a corpus split."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--model", default="", help="a model directory, a registered version or 'embedded' (default: GUARD_MODEL_DIR)")
        parser.add_argument("--data", required=True, metavar="DIR", help="a training split of the corpus (JSONL files + taxonomies.json)")
        parser.add_argument("--out", default="", metavar="DIR", help="where heads/ is written (default: the model directory)")
        parser.add_argument("--tune-epochs", type=int, default=0, metavar="N",
                            help="tune a copy of layers 12-14 as the prompt head for N epochs (about 3 minutes each on "
                                 "2 cores, plus 6-9 minutes of layer-12 states; 0: the prompt head reads the frozen taps)")
        parser.add_argument("--tune-copies", type=int, default=1, metavar="K",
                            help="tune K copies in different orders and average them in weight space (K times the epochs)")
        parser.add_argument("--tuned-rank", type=int, default=0, metavar="R",
                            help="store the tuned layers as their change from the served ones cut to rank R by SVD (rank 128: "
                                 "10 MB instead of 33, for 0.2-0.7 points of held-out AP; 0: whole)")

        parser.add_argument("--peak-padded", type=int, default=None, metavar="N",
                            help="with --add-peak or --add-response-peak: padded requests (answers) the peak head is "
                                 "fitted on (default: 1400 requests, 700 answers; each adds a forward over 100-700 tokens)")
        parser.add_argument("--add-peak", action="store_true",
                            help="fit only a peak head on the model's tuned layers and add it to its heads (everything "
                                 "else kept; about 18 minutes on 2 cores)")
        parser.add_argument("--add-response-peak", action="store_true",
                            help="fit only a response peak head on the model's tuned layers and add it to its heads "
                                 "(everything else kept; harmful content inside a long answer; about 20 minutes on 2 cores)")

    def handle(self, *args: Any, **options: Any) -> None:
        from guard import runtime
        from guard.backends.base import GuardError
        from trainer.model_heads import fit_model_heads

        data = Path(options["data"])
        if not data.is_dir() or not any(data.glob("*.jsonl")):
            raise CommandError(f"--data {data}: not a directory of JSONL files")
        try:
            resolved = runtime.resolve_model(options["model"] or None)
            # Without heads (they are refitted), except for --add-peak, which reads the heads' tuned layers.
            adding = bool(options["add_peak"] or options["add_response_peak"])
            backend = runtime.get_backend(options["model"] or None, heads=adding)
        except GuardError as error:
            raise CommandError(str(error)) from error
        if not hasattr(backend, "feature_extractor"):
            raise CommandError("latent heads need the transformers backend (GUARD_BACKEND=transformers)")
        out = Path(options["out"]) if options["out"] else (resolved.adapter_path or resolved.base_path)
        if not options["out"] and resolved.adapter_path is None and resolved.label == "embedded":
            raise CommandError("the embedded base lives in a cache: give --out DIR for its heads")
        if options["tune_epochs"] < 0:
            raise CommandError("--tune-epochs must be 0 or more")
        if options["tuned_rank"] < 0 or (options["tuned_rank"] and not options["tune_epochs"]):
            raise CommandError("--tuned-rank must be 1 or more, with --tune-epochs (scripts/cut_tuned_rank.py cuts tuned heads)")
        if options["tune_copies"] < 1:
            raise CommandError("--tune-copies must be 1 or more")
        if options["add_peak"] and options["add_response_peak"]:
            raise CommandError("--add-peak and --add-response-peak: one at a time (each saves the heads)")
        if options["peak_padded"] is not None and (options["peak_padded"] < 1 or not adding):
            raise CommandError("--peak-padded must be 1 or more, with --add-peak or --add-response-peak")
        if adding:
            return self._add_peak(backend, data, out, options["peak_padded"], response=options["add_response_peak"])
        fit_model_heads(backend, data, out, log=lambda line: self.stdout.write(line), tune_epochs=options["tune_epochs"],
                        tuned_rank=options["tuned_rank"] or None, tuned_copies=options["tune_copies"])

    def _add_peak(self, backend: Any, data: Path, out: Path, padded: int | None, *, response: bool = False) -> None:
        import dataclasses

        from trainer.head_data import fit_sample
        from trainer.peak_fitting import PeakSizes, add_peak_head, filler_records, reader_of
        from trainer.response_peak_fitting import add_response_peak_head, response_peak_sizes

        flag, add = ("--add-response-peak", add_response_peak_head) if response else ("--add-peak", add_peak_head)
        sizes = response_peak_sizes() if response else PeakSizes()
        if padded is not None:
            sizes = dataclasses.replace(sizes, padded=padded)
        if backend.heads is None:
            raise CommandError(f"{flag}: the model has no heads to add a peak head to (fit them with --tune-epochs)")
        try:
            heads = add(backend.heads, reader_of(backend), fit_sample(data), filler_records(data), sizes=sizes,
                        log=lambda line: self.stdout.write(line))
        except ValueError as error:
            raise CommandError(f"{flag}: {error}") from error
        self.stdout.write(f"heads with a {'response ' if response else ''}peak head saved to {heads.save(out)}")
