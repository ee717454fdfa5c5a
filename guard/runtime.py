"""Per-process access to guard backends.

The model is loaded lazily, once per process, on first use: in a Celery worker
that is the child process that runs the task (never the parent), in the web
process the first classification (test console, synchronous API).

Public functions:

``resolve_model(name_or_path)`` -> ``ResolvedModel``
    ``"embedded"``/None/"" -> the embedded base (or the ``GUARD_MODEL_DIR``
    setting when nothing is named); a registered ``ModelVersion`` name -> its
    base + adapter (+ its calibration, ``metrics["calibration"]``); a local
    directory: a base model (``config.json``) or a PEFT adapter
    (``adapter_config.json`` naming its base, ``"embedded"`` allowed), with the
    calibration stored in it (``calibration.json``, see ``guard.calibration``).
    Anything else -> ``GuardError`` saying why.

``get_backend(model=None)`` -> ``GuardBackend`` (cached per process; the
    ``GUARD_BACKEND`` setting picks transformers | vllm | openai).

``classify(requests, model=None, constrained=True)`` -> ``list[Verdict]``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from guard import embedded
from guard.backends.base import GuardBackend, GuardError, GuardRequest
from guard.calibration import Calibration, of_version, read_directory
from guard.contract import Verdict

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "openai")


@dataclass(frozen=True)
class ResolvedModel:
    """A model to load: a base directory plus an optional LoRA adapter directory."""

    label: str
    base_path: Path
    adapter_path: Path | None = None
    # How label probabilities become labels (temperature, per-field thresholds).
    calibration: Calibration = Calibration()
    # Latent heads fitted on this model's hidden states (``guard.heads``); None: the label logits decide.
    heads_path: Path | None = None

    @property
    def temperature(self) -> float | None:
        return self.calibration.temperature


def _embedded_base() -> Path:
    try:
        return embedded.prepare(log=logger.info)
    except Exception as error:  # noqa: BLE001 - a missing chunk package, a full disk...
        raise GuardError(
            f"the embedded model is not available ({error}); run `python manage.py guard_model prepare`"
        ) from error


def _resolve_base(value: str, context: str) -> Path:
    if value.strip() in ("", embedded.EMBEDDED_NAME):
        return _embedded_base()
    path = Path(value).expanduser()
    if not (path / "config.json").is_file():
        raise GuardError(f"{context}: base model directory {value!r} does not exist or has no config.json")
    return path


def _resolve_directory(path: Path, label: str) -> ResolvedModel:
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        try:
            config = json.loads(adapter_config.read_text())
        except (OSError, ValueError) as error:
            raise GuardError(f"adapter {path}: unreadable adapter_config.json ({error})") from error
        base_name = str(config.get("base_model_name_or_path") or embedded.EMBEDDED_NAME)
        base_dir = Path(base_name).expanduser()
        if base_name != embedded.EMBEDDED_NAME and not base_dir.is_absolute():
            # A relative base is relative to the adapter, when it exists there.
            candidate = (path / base_dir).resolve()
            if candidate.is_dir():
                base_name = str(candidate)
        base = _resolve_base(base_name, f"adapter {path}")
        return ResolvedModel(
            label=label, base_path=base, adapter_path=path, calibration=read_directory(path), heads_path=heads_directory(path)
        )
    if (path / "config.json").is_file():
        return ResolvedModel(label=label, base_path=path, calibration=read_directory(path), heads_path=heads_directory(path))
    raise GuardError(f"model directory {str(path)!r} has neither config.json (a model) nor adapter_config.json (a LoRA adapter)")


def _model_version(name: str) -> Any:
    from guard.models import ModelVersion

    try:
        return ModelVersion.objects.filter(name=name).first()
    except Exception as error:  # noqa: BLE001 - no database (bench scripts): treat as not registered
        logger.debug("model registry unavailable: %s", error)
        return None


def heads_directory(model_dir: Path | None) -> Path | None:
    # Imported here: guard.heads pulls in numpy and torch, which the web process loads only to judge.
    from guard.heads import heads_directory as stored_heads

    return stored_heads(model_dir)


def _version_heads(version: Any, adapter: Path | None) -> Path | None:
    """A registered version's heads: ``metrics["heads_path"]`` (a refit), else those beside its adapter."""
    stored = (version.metrics or {}).get("heads_path") if isinstance(version.metrics, dict) else None
    if stored:
        found = heads_directory(Path(stored).expanduser())
        if found is None:
            raise GuardError(f"model version {version.name!r}: heads directory {stored!r} has no heads.json")
        return found
    return heads_directory(adapter)


def resolve_model(name_or_path: str | None) -> ResolvedModel:
    """Where the weights of ``name_or_path`` are (see the module docstring)."""
    value = (name_or_path or "").strip()
    if not value:
        value = (settings.GUARD_MODEL_DIR or "").strip() or embedded.EMBEDDED_NAME
    if value == embedded.EMBEDDED_NAME:
        return ResolvedModel(label=embedded.EMBEDDED_NAME, base_path=_embedded_base())
    path = Path(value).expanduser()
    if path.is_dir():
        return _resolve_directory(path.resolve(), label=str(path))
    version = _model_version(value)
    if version is not None:
        base = _resolve_base(version.base_model_path or embedded.EMBEDDED_NAME, f"model version {version.name!r}")
        adapter: Path | None = None
        if version.adapter_path:
            adapter = Path(version.adapter_path).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                raise GuardError(
                    f"model version {version.name!r}: adapter directory {version.adapter_path!r} "
                    "does not exist or has no adapter_config.json"
                )
        return ResolvedModel(
            label=version.name,
            base_path=base,
            adapter_path=adapter,
            calibration=of_version(version.metrics, adapter),
            heads_path=_version_heads(version, adapter),
        )
    raise GuardError(
        f"unknown model {value!r}: not 'embedded', not a registered model version, and not a local model directory"
    )


# --------------------------------------------------------------------------- backends

_backends: dict[Hashable, GuardBackend] = {}
_lock = threading.Lock()


def backend_kind() -> str:
    kind = (settings.GUARD_BACKEND or "transformers").strip().lower()
    if kind not in BACKENDS:
        raise GuardError(f"unknown GUARD_BACKEND {kind!r}; expected one of {', '.join(BACKENDS)}")
    return kind


def get_backend(model: str | None = None, calibration: Calibration | None = None, *, heads: bool = True) -> GuardBackend:
    """The backend serving ``model`` in this process (created on first use).

    ``calibration`` replaces the model's own (``manage.py calibrate`` fitting field by field);
    ``heads=False`` decides with the label logits although the model has heads (measurements)."""
    kind = backend_kind()
    if kind == "openai":
        key: Hashable = ("openai", settings.GUARD_OPENAI_BASE_URL, model or "")
        resolved = None
    else:
        resolved = resolve_model(model)
        key = (kind, str(resolved.base_path), str(resolved.adapter_path or ""))
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _create(kind, model, resolved, heads=heads)
            _backends[key] = backend
    if resolved is not None and hasattr(backend, "temperature"):
        # A re-calibrated model version takes effect without reloading the weights.
        applied = calibration if calibration is not None else resolved.calibration
        backend.temperature = applied.temperature
        if hasattr(backend, "thresholds"):
            backend.thresholds = dict(applied.thresholds)
        if hasattr(backend, "use_heads"):
            # Refitted heads take effect without reloading the weights, like a re-calibration.
            backend.use_heads(resolved.heads_path if heads else None)
    return backend


def _create(kind: str, model: str | None, resolved: ResolvedModel | None, *, heads: bool = True) -> GuardBackend:
    if kind == "openai":
        from guard.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model=model or None)
    assert resolved is not None
    if kind == "vllm":
        from guard.backends.vllm_backend import VLLMBackend

        return VLLMBackend(resolved)
    from guard.backends.transformers_backend import TransformersBackend

    logger.info("loading guard model %s (base %s, adapter %s)", resolved.label, resolved.base_path, resolved.adapter_path)
    return TransformersBackend(
        resolved.base_path,
        resolved.adapter_path,
        label=resolved.label,
        temperature=resolved.calibration.temperature,
        thresholds=resolved.calibration.thresholds,
        heads_path=resolved.heads_path if heads else None,
    )


def reset_backends() -> None:
    """Forget every loaded backend (tests; after a model version changed on disk)."""
    with _lock:
        _backends.clear()


def classify(
    requests: list[GuardRequest],
    model: str | None = None,
    *,
    constrained: bool = True,
    calibration: Calibration | None = None,
    heads: bool = True,
) -> list[Verdict]:
    """Judge ``requests`` with ``model`` (default: the configured/embedded model), under
    ``calibration`` instead of the model's own when one is given; ``heads=False``: by the
    label logits even where the model has latent heads (what evaluation compares).

    A request's ``adapter_path`` overrides the model's adapter: with the vLLM
    backend it becomes a per-request LoRA; otherwise those requests are served
    by a backend for that adapter directory.
    """
    if not requests:
        return []
    if backend_kind() == "vllm" or not any(r.adapter_path for r in requests):
        return _call(get_backend(model, calibration, heads=heads), requests, constrained)
    verdicts: list[Verdict | None] = [None] * len(requests)
    groups: dict[str | None, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.adapter_path or None, []).append(index)
    for adapter, indexes in groups.items():
        backend = get_backend(adapter or model, calibration, heads=heads)
        for index, verdict in zip(indexes, _call(backend, [requests[i] for i in indexes], constrained), strict=True):
            verdicts[index] = verdict
    return [v for v in verdicts if v is not None]


def _call(backend: GuardBackend, requests: list[GuardRequest], constrained: bool) -> list[Verdict]:
    if constrained:
        return backend.classify_batch(requests)
    return backend.classify_batch(requests, constrained=False)  # type: ignore[call-arg]
