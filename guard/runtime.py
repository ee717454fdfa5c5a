"""Per-process access to guard backends.

The model is loaded lazily, once per process, on first use: in a Celery worker
that is the child process that runs the task (never the parent), in the web
process the first classification (test console, synchronous API).
"""

from __future__ import annotations

# Implemented by the guard backends work (issue 3). Public functions:
#
#   resolve_model(name_or_path: str | None) -> ResolvedModel
#       "embedded"/None/"" -> the embedded base (or the GUARD_MODEL_DIR setting);
#       a registered ModelVersion name -> its base + adapter; a local directory
#       (a base model, or a PEFT adapter dir whose adapter_config names its base).
#       Unknown -> guard.backends.base.GuardError with a clear message.
#
#   get_backend(model: str | None = None) -> GuardBackend   (cached per process)
#
#   classify(requests: list[GuardRequest], model: str | None = None) -> list[Verdict]
