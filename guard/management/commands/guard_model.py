from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from guard import embedded


class Command(BaseCommand):
    help = "Manage the embedded guard model. `prepare` assembles and converts it once (cached by sha256)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["prepare", "path"])
        parser.add_argument("--force", action="store_true", help="convert again even if cached")

    def handle(self, *args: Any, action: str, force: bool, **options: Any) -> None:
        if action == "path":
            self.stdout.write(str(embedded.cached_model_dir()))
            return
        started = time.monotonic()
        cached = embedded.is_prepared() and not force
        path = embedded.prepare(force=force, log=lambda msg: self.stderr.write(msg))
        seconds = time.monotonic() - started
        self.stderr.write(f"{'reused cache' if cached else 'prepared'} in {seconds:.1f}s")
        self.stdout.write(str(path))
