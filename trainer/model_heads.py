"""A loaded guard model's heads, end to end: fit and save them (``manage.py fit_heads``, the training jobs), and
store their tuned layers cut to a rank (``scripts/cut_tuned_rank.py``). The fitting itself is ``trainer.heads``;
adding a peak head to fitted heads is ``trainer.peak_fitting.add_peak_head``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from guard.features import FeatureExtractor
from guard.heads import GuardHeads
from guard.layer_tuning import pooled, prompt_residuals
from trainer.head_data import HeadRecord, fit_sample
from trainer.heads import (
    HeadFitter,
    LayerTuning,
    Log,
    distinct_prompts,
    in_validation,
    validation_threshold,
)
from trainer.peak_fitting import filler_records


def layer_tuning(backend: Any, epochs: int, rank: int | None = None, copies: int = 1) -> LayerTuning | None:
    """Tuning of a loaded ``TransformersBackend``'s layers 12-14 for ``epochs`` (0: none), stored at ``rank`` (None: whole),
    ``copies`` of them averaged."""
    if epochs <= 0:
        return None
    return LayerTuning(decoder=backend.model.get_decoder(), epochs=epochs, rank=rank, copies=copies)


def fit_model_heads(
    backend: Any, data_dir: Path, out_dir: Path, *, log: Log = print, records: list[HeadRecord] | None = None, tune_epochs: int = 0,
    tuned_rank: int | None = None, tuned_copies: int = 1,
) -> GuardHeads:
    """Fit and save the heads of a loaded ``TransformersBackend`` from ``data_dir`` (a training split);
    ``tune_epochs``: tune layers 12-14 as the prompt head for that many epochs (0: the frozen candidates),
    stored as their change from the served layers cut to ``tuned_rank`` (None: whole); ``tuned_copies``: that many
    copies tuned in different orders and averaged (``guard.layer_tuning.soup_prompt_layers``)."""
    from guard.features import extractor_for

    extractor = extractor_for(backend, cached=True)
    tuning = layer_tuning(backend, tune_epochs, tuned_rank, tuned_copies)
    fillers = filler_records(Path(data_dir)) if tuning is not None else []
    fitter = HeadFitter(extractor, backend.feature_fingerprint, log=log, tuning=tuning, fillers=fillers)
    records = records if records is not None else fit_sample(Path(data_dir))
    taxonomies = Path(data_dir) / "taxonomies.json"
    heads = fitter.fit(records, taxonomies if taxonomies.is_file() else None)
    heads.info["data"] = str(data_dir)
    target = heads.save(out_dir)
    log(f"heads saved to {target}")
    return heads


def cut_tuned_rank(backend: Any, data_dir: Path, out_dir: Path, rank: int, *, log: Log = print) -> GuardHeads:
    """A loaded ``TransformersBackend``'s heads with their tuned layers stored as the change cut to ``rank``
    (``TunedWeights.low_rank``), the prompt head thresholded again on its validation prompts scored through the
    cut weights (what will serve); everything else kept. Saved in ``out_dir``."""
    import dataclasses

    heads = backend.heads
    if heads is None or heads.tuned is None:
        raise ValueError("these heads carry no tuned layers")
    records = fit_sample(Path(data_dir))
    prompts, y, in_val = distinct_prompts(records, np.array([in_validation(r.id) for r in records]))
    validation_prompts = [p for p, v in zip(prompts, in_val, strict=True) if v]
    decoder = backend.model.get_decoder()
    weights = heads.tuned.low_rank(decoder, rank)
    residuals = prompt_residuals(FeatureExtractor(backend.runner, backend.tokenizer), validation_prompts, weights.cut, log=log)
    means = pooled(residuals, list(range(len(validation_prompts))), weights.module(decoder, backend.device))
    threshold, validation_info = validation_threshold(heads.prompt.probability(means), y[in_val])
    log(f"tuned layers cut to rank {rank}: {heads.tuned.nbytes / 1e6:.1f} -> {weights.nbytes / 1e6:.1f} MB; "
        f"validation {heads.prompt.info.get('validation')} -> {validation_info}")
    info = {**heads.prompt.info, "validation": validation_info,
            "candidates": {heads.prompt.kind: validation_info["average_precision"]},
            "tuning": {**heads.prompt.info.get("tuning", {}), "rank": rank}}
    # A copy: the backend keeps serving the heads it loaded.
    cut = dataclasses.replace(heads, prompt=dataclasses.replace(heads.prompt, threshold=threshold, info=info), tuned=weights)
    cut.save(out_dir)
    return cut
