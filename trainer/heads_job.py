"""The "Refit heads" training job: every latent head refitted from the corpus and the reviews, on a CPU.

The job's backbone is its base model plus its start adapter (``init_adapter``), exactly as a
training job continues one. The candidate is that backbone with the new heads: the adapter
files (a few MB) and ``heads/`` are written to the job's output directory, so the candidate
is a self-contained model directory; it is then evaluated against production on the same
records, registered and promoted like any candidate. Nothing here needs a GPU; features
already in the cache (``guard.features``) are not computed again.

The prompt head may be a tuned copy of layers 12-14 (``guard.layer_tuning``): the job's
``tune_epochs`` tunes it afresh (about 3 minutes an epoch on 2 cores, plus the layer-12 states);
without it, a start model whose heads carry tuned layers keeps them and their prompt head (a refit
from reviews should not silently fall back to the frozen prompt head), and every other head is refitted.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.corpus import expand_paths
from trainer.head_data import CHAT_FILES, FIT_CHAT_PER_LABEL, HeadRecord, draw, read_records
from trainer.models import TrainingJob
from trainer.settings import TrainOutcome

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "calibration.json", "README.md")


def reviewed_head_records(spec: str) -> list[HeadRecord]:
    """Reviewers' decisions as records: human labels are the best data a head can get."""
    from trainer.data import _reviewed_records

    records = []
    for policy, record, gold, source in _reviewed_records(spec):
        prompt = str(record.get("prompt") or "").strip()
        if not prompt:
            continue
        response = str(record.get("response") or "").strip() or None
        records.append(HeadRecord(
            id=str(record.get("id")), file=source, prompt=prompt, response=response, prompt_label=gold.prompt_label,
            response_label=gold.response_label if response else None, refusal_label=gold.refusal_label if response else None,
            categories=(), taxonomy="none", licence=f"reviews of {policy.name} (yours)",
        ))
    return records


def tune_epochs(job: TrainingJob) -> int:
    """The job's epochs of tuning layers 12-14 as the prompt head (0: none)."""
    return int((job.hyperparameters or {}).get("tune_epochs") or 0)


def _tuned_heads(model_dir: Path | None) -> Any:
    """The heads in ``model_dir`` if they carry tuned layers (else None; unreadable heads count as none)."""
    from guard.heads import HeadsError, heads_directory, load

    directory = heads_directory(model_dir)
    if directory is None:
        return None
    try:
        heads = load(directory)
    except HeadsError:
        return None
    return heads if heads.tuned is not None else None


def job_records(sources: list[str], per_label: int) -> tuple[list[HeadRecord], Path | None]:
    """The fit sample of the job's data sources (JSONL files and directories, ``reviewed:<slug>``),
    and the ``taxonomies.json`` beside them (where category heads learn their taxonomies)."""
    paths, reviewed = expand_paths(sources)
    files = {path.stem: read_records(path) for path in paths}
    taxonomies = next((p.parent / "taxonomies.json" for p in paths if (p.parent / "taxonomies.json").is_file()), None)
    records = draw(Path("."), per_label=per_label, chat_per_label=FIT_CHAT_PER_LABEL if any(n in CHAT_FILES for n in files) else per_label,
                   response_per_label=max(per_label, 120), refusal_per_label=max(per_label, 200), per_category=10, files=files)
    for spec in reviewed:
        records += reviewed_head_records(spec)
    return records, taxonomies


def _copy_backbone(job: TrainingJob, out_dir: Path) -> Path | None:
    """The start adapter's files in the output directory (its base made explicit); None without one."""
    from guard import embedded

    init = (job.init_adapter or "").strip()
    if not init:
        return None
    source = Path(init)
    for name in ADAPTER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    base = (job.base_model or embedded.EMBEDDED_NAME).strip()
    config["base_model_name_or_path"] = base if base == embedded.EMBEDDED_NAME else str(Path(base).resolve())
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def refit_after_training(job: TrainingJob, model_dir: Path, progress: Any) -> dict[str, Any] | None:
    """A new backbone gets its heads refitted in the same job, when the model it continues had heads
    (the old heads read other hidden states and would be refused). Returns the heads' summary."""
    from guard import runtime
    from guard.features import extractor_for
    from guard.heads import heads_directory
    from trainer.heads import HeadFitter
    from trainer.model_heads import layer_tuning

    start = Path(job.init_adapter) if job.init_adapter else None
    if heads_directory(start) is None or not (job.hyperparameters or {}).get("refit_heads", True):
        return None
    records, taxonomies = job_records(list(job.data_sources), int((job.hyperparameters or {}).get("heads_per_label") or 90))
    if not records:
        progress.log("the start model had heads, but the job's data hold no labelled records to refit them on")
        return None
    progress.log(f"refitting the latent heads for the new weights on {len(records)} records")
    backend = runtime.get_backend(str(model_dir), heads=False)
    tuning = layer_tuning(backend, tune_epochs(job))
    old = _tuned_heads(start) if tuning is None else None
    if old is not None:
        # The old tuned layers were tuned on the old backbone's states: tune them again for the new weights.
        # The same recipe: epochs, copies averaged, and the rank they were stored at.
        tuning = layer_tuning(backend, old.tuned.info.get("epochs", 6), old.tuned.rank, old.tuned.info.get("soup_of", 1))
    fitter = HeadFitter(extractor_for(backend, cached=True), backend.feature_fingerprint, log=progress.log, tuning=tuning)
    heads = fitter.fit(records, taxonomies)
    heads.info["data"] = list(job.data_sources)
    heads.save(model_dir)
    runtime.reset_backends()
    return heads.info


def run_heads_job(job: TrainingJob, progress: Any) -> TrainOutcome:
    """Fit the heads (see the module docstring); the caller evaluates and registers the candidate."""
    from guard import runtime
    from guard.features import extractor_for
    from trainer.heads import HeadFitter
    from trainer.model_heads import layer_tuning

    started = time.perf_counter()
    out_dir = Path(job.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = _copy_backbone(job, out_dir)
    if model_dir is None:
        raise ValueError("a heads job needs a start adapter or a model directory as its backbone: choose the model whose "
                         "heads to refit as the start adapter")
    backend = runtime.get_backend(str(model_dir), heads=False)
    per_label = int((job.hyperparameters or {}).get("heads_per_label") or 90)
    records, taxonomies = job_records(list(job.data_sources), per_label)
    if not records:
        raise ValueError("the job's data sources hold no labelled records")
    progress.log(f"refitting heads on {len(records)} records (features cached per backbone)")
    TrainingJob.objects.filter(pk=job.pk).update(stage=TrainingJob.Stage.TRAINING, total_steps=1)
    tuning = layer_tuning(backend, tune_epochs(job))
    kept = _tuned_heads(Path(job.init_adapter)) if tuning is None else None
    if kept is not None and kept.fingerprint != backend.feature_fingerprint:
        kept = None
    if kept is not None:
        progress.log(f"keeping the start model's tuned layers and their prompt head ({kept.prompt.kind}); "
                     "give the job tune epochs to tune them again")
    fitter = HeadFitter(extractor_for(backend, cached=True), backend.feature_fingerprint, log=progress.log, tuning=tuning,
                        kept_prompt=(kept.prompt, kept.tuned) if kept is not None else None,
                        kept_peak=kept.peak if kept is not None else None,
                        kept_response_peak=kept.response_peak if kept is not None else None)
    heads = fitter.fit(records, taxonomies)
    if kept is not None:
        heads.info["tasks"]["prompt"] = {**kept.prompt.info, "kept_from": job.init_adapter}
    heads.info["data"] = list(job.data_sources)
    heads.save(out_dir)
    runtime.reset_backends()
    seconds = round(time.perf_counter() - started, 1)
    progress.log(f"heads saved in {seconds} s")
    summary = {"recipe": "heads", "seconds": seconds, "heads": heads.info}
    provenance = {"backbone": {"base": job.base_model, "adapter": job.init_adapter}, "data": list(job.data_sources),
                  "licences": heads.info.get("licences", {})}
    return TrainOutcome(out_dir=out_dir, model_dir=model_dir, steps=1, cancelled=False, checkpoint=None, history=[],
                        summary=summary, provenance=provenance, held_out_files=[])
