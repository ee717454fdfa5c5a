"""Load the production guard before a process takes traffic (cold starts).

Without it the first request a worker or web process serves pays for loading the
weights (about 10 s for the first console run on a CPU, 4.6 s for the first API
call). ``preload`` loads, in this process, the models that serve traffic: the
deployment default and every registered model a policy names as its production
model, and judges one tiny request with each so the first real one is warm.

Where it runs (``settings.GUARD_PRELOAD``, env ``GUARD_PRELOAD``; default
``workers,web``; ``0`` turns it off, as the tests do):

- ``workers``: a Celery worker consuming ``gpu-infer``, in each pool process after
  the fork (``worker_process_init``; never in the parent, which must not touch CUDA),
  or in the worker itself with a solo or threads pool (guardsite/celery.py);
- ``web``: each gunicorn worker, once it has loaded the app (``gunicorn.conf.py``).

A model that cannot be loaded is logged and skipped: the process still starts,
and the request that needs it gets the error it would have got anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.conf import settings

logger = logging.getLogger(__name__)
PLACES = ("workers", "web")
OFF = {"", "0", "off", "false", "no", "none"}
ALL = {"1", "on", "true", "yes", "all"}
# Cap: a deployment with many policies on many models preloads the most used first.
MAX_MODELS = 4


def places(value: str | Iterable[str] | None = None) -> set[str]:
    """Where preloading is on: ``"workers,web"``, ``"web"``, ``"0"``, ``"all"`` (from the setting by default)."""
    raw = settings.GUARD_PRELOAD if value is None else value
    if not isinstance(raw, str):
        raw = ",".join(raw)
    words = {word.strip().lower() for word in raw.split(",")}
    if words <= OFF:
        return set()
    if words & ALL:
        return set(PLACES)
    unknown = words - set(PLACES) - OFF
    if unknown:
        logger.warning("GUARD_PRELOAD: unknown place(s) %s ignored (use workers, web, all or 0)", ", ".join(sorted(unknown)))
    return words & set(PLACES)


def enabled(place: str) -> bool:
    return place in places()


def models_to_preload() -> list[str | None]:
    """The deployment default (None) and the registered production models of policies, most policies first."""
    from django.db.models import Count

    from guard.models import ModelVersion

    names: list[str | None] = [None]
    try:
        serving = (
            ModelVersion.objects.filter(production_for__isnull=False)
            .annotate(policies=Count("production_for"))
            .order_by("-policies", "name")
            .values_list("name", flat=True)
        )
        names.extend(name for name in serving if name not in names)
    except Exception as error:  # noqa: BLE001 - no database yet (first migrate): the default alone
        logger.warning("guard preload: could not read the policies' models (%s); loading the default only", error)
    return names[:MAX_MODELS]


def preload(where: str = "this process", models: list[str | None] | None = None) -> list[str]:
    """Load and warm each model; returns the labels of those now ready (failures are logged)."""
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec
    from guard.runtime import backend_kind, classify

    if backend_kind() == "openai":
        logger.info("guard preload (%s): GUARD_BACKEND=openai serves from another server; nothing to load", where)
        return []
    warm_up = GuardRequest(
        policy=PolicySpec(name="warm-up", categories=(CategorySpec("S1", "Warm-up", "Nothing real."),)), prompt="Hello."
    )
    ready: list[str] = []
    for model in models if models is not None else models_to_preload():
        label = model or "the deployment default"
        started = time.monotonic()
        try:
            classify([warm_up], model)
        except Exception as error:  # noqa: BLE001 - a bad model must not stop the process from starting
            logger.warning("guard preload (%s): %s not loaded: %s", where, label, error)
            continue
        ready.append(label)
        logger.info("guard preload (%s): %s ready in %.1f s", where, label, time.monotonic() - started)
    return ready
