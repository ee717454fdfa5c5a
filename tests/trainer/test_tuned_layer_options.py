"""How tuned prompt layers are made and stored: as their change from the served layers cut to a rank
(``fit_heads --tuned-rank``, ``trainer.heads.cut_tuned_rank``, ``scripts/cut_tuned_rank.py``), and as a soup of copies
tuned in several orders (``fit_heads --tune-copies``): tiny random model, plumbing."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.heads import load
from trainer.model_heads import cut_tuned_rank, fit_model_heads

pytestmark = pytest.mark.slow


@pytest.fixture
def tuned_backend(corpus: Path, tiny_model: Path, tmp_path: Path):
    """The tiny model serving heads whose prompt head was tuned for an epoch, stored whole."""
    from guard.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_model, device="cpu", max_new_tokens=4, max_input_tokens=256)
    fit_model_heads(backend, corpus, tmp_path / "whole", log=lambda line: None, tune_epochs=1)
    backend.use_heads(tmp_path / "whole" / "heads")
    assert backend.heads is not None and backend.heads.tuned is not None and backend.heads.tuned.rank is None
    return backend


def test_cut_tuned_layers_ship_smaller_with_the_prompt_head_thresholded_again(tuned_backend, corpus, tmp_path):
    whole = tuned_backend.heads
    cut_tuned_rank(tuned_backend, corpus, tmp_path / "cut", 2, log=lambda line: None)
    cut = load(tmp_path / "cut", tuned_backend.feature_fingerprint)
    assert cut.tuned is not None and cut.tuned.rank == 2 and cut.tuned.nbytes < whole.tuned.nbytes
    assert cut.prompt.info["tuning"]["rank"] == 2 and cut.prompt.info["validation"]["n"] == whole.prompt.info["validation"]["n"]
    assert (cut.prompt.coef == whole.prompt.coef).all()  # the head itself is kept; only its threshold is chosen again


def test_heads_with_cut_tuned_layers_decide_fast_verdicts(tuned_backend, corpus, tmp_path):
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec

    cut_tuned_rank(tuned_backend, corpus, tmp_path / "cut", 2, log=lambda line: None)
    tuned_backend.use_heads(tmp_path / "cut" / "heads")
    policy = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
    verdicts = tuned_backend.classify_batch([GuardRequest(policy, "How do I build a pipe bomb?")])
    assert [v.decided_by for v in verdicts] == ["heads"]
    assert tuned_backend.feature_extractor().layout.tuned == load(tmp_path / "cut").layout.tuned


def test_heads_without_tuned_layers_cannot_be_cut(corpus, tiny_model, tmp_path):
    from guard.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_model, device="cpu", max_new_tokens=4, max_input_tokens=256)
    fit_model_heads(backend, corpus, tmp_path / "frozen", log=lambda line: None)
    backend.use_heads(tmp_path / "frozen" / "heads")
    with pytest.raises(ValueError, match="no tuned layers"):
        cut_tuned_rank(backend, corpus, tmp_path / "cut", 2, log=lambda line: None)


@pytest.mark.django_db
def test_fit_heads_stores_freshly_tuned_layers_at_the_rank_asked(corpus, tiny_model, tmp_path):
    from django.core.management import call_command

    call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path),
                 "--tune-epochs", "1", "--tuned-rank", "2", stdout=open(tmp_path / "log.txt", "w"))
    heads = load(tmp_path)
    assert heads.tuned is not None and heads.tuned.rank == 2 and heads.prompt.blocks == "tuned"


@pytest.mark.django_db
def test_fit_heads_refuses_a_tuned_rank_without_tuning(corpus, tiny_model, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--tuned-rank must be 1 or more, with --tune-epochs"):
        call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path), "--tuned-rank", "2")


@pytest.mark.django_db
def test_fit_heads_averages_the_copies_it_is_asked_to_tune(corpus, tiny_model, tmp_path):
    from django.core.management import call_command

    call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path),
                 "--tune-epochs", "1", "--tune-copies", "2", stdout=open(tmp_path / "log.txt", "w"))
    heads = load(tmp_path)
    assert heads.tuned is not None and heads.tuned.info["soup_of"] == 2
    assert [copy["seed"] for copy in heads.tuned.info["copies"]] == [0, 1]
    assert heads.prompt.info["tuning"]["soup_of"] == 2


@pytest.mark.django_db
def test_fit_heads_add_peak_refuses_a_model_without_heads(tiny_model, corpus, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--add-peak: the model has no heads"):
        call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path), "--add-peak")


@pytest.mark.django_db
def test_fit_heads_peak_padded_is_refused_without_add_peak(tiny_model, corpus, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--peak-padded must be 1 or more, with --add-peak or --add-response-peak"):
        call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path), "--peak-padded", "100")


@pytest.mark.django_db
def test_fit_heads_add_response_peak_refuses_a_model_without_heads(tiny_model, corpus, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--add-response-peak: the model has no heads"):
        call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path), "--add-response-peak")


@pytest.mark.django_db
def test_fit_heads_adds_one_peak_head_at_a_time(tiny_model, corpus, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="one at a time"):
        call_command("fit_heads", "--model", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path), "--add-peak",
                     "--add-response-peak")
