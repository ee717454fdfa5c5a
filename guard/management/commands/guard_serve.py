from __future__ import annotations

import logging
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from guard.backends.base import GuardError


class Command(BaseCommand):
    help = (
        "Serve a guard model over an OpenAI-compatible HTTP API "
        "(GET /v1/models, POST /v1/chat/completions) for the openai backend."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--model", default=None, help="embedded (default), a model version name, or a local directory")
        parser.add_argument("--served-model-name", default="guard", help="the model id clients send (default: guard)")
        parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: GUARD_DEVICE)")

    def handle(self, *args: Any, host: str, port: int, model: str | None, served_model_name: str, device: str | None, **options: Any) -> None:
        from guard.backends.transformers_backend import TransformersBackend
        from guard.runtime import resolve_model
        from guard.serve import make_server

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        try:
            resolved = resolve_model(model)
            backend = TransformersBackend(
                resolved.base_path, resolved.adapter_path, device=device, label=resolved.label
            )
        except GuardError as error:
            raise CommandError(str(error)) from error
        try:
            server = make_server(host, port, backend, served_model_name)
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error}") from error
        bound_host, bound_port = server.server_address[:2]
        # Tests and supervisors wait for this line.
        self.stdout.write(f"guard_serve listening on http://{bound_host}:{bound_port}/v1 model={served_model_name} ({resolved.label})")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
