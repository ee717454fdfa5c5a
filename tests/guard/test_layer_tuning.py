"""The tuned prompt head (``guard.layer_tuning``): layers of a tiny random Gemma 3 (six layers, five
sliding-window and one global) tuned on a few prompts, stored with the heads, served by the features; and the
peak head that reads long prompts whole on the tuned copy (``guard.peak_reading``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guard.features import FeatureExtractor, FeatureStore
from guard.heads import HeadsError, load
from guard.layer_tuning import pooled, soup_prompt_layers, tune_prompt_layers
from guard.peak_reading import PeakHead, TokenReader
from guard.testing import TINY_SAFE, TINY_UNSAFE, fit_tiny_heads
from guard.tuned_layers import TUNED_FILE, TunedWeights

PROMPTS = [*TINY_UNSAFE, *TINY_SAFE]
GOLD = np.array([True] * len(TINY_UNSAFE) + [False] * len(TINY_SAFE))
TRAIN = [i for i in range(len(PROMPTS)) if i % 4]  # both labels on both sides
VAL = [i for i in range(len(PROMPTS)) if not i % 4]


def test_tuning_scores_every_epoch_and_keeps_the_one_validation_picks(tuned):
    _, result = tuned
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2]
    kept = result.weights.info["kept_epoch"]
    assert result.history[kept]["validation_ap"] == max(entry["validation_ap"] for entry in result.history)
    assert result.validation_scores.shape == (len(VAL),)


def test_the_served_features_carry_the_tuned_block_the_head_was_tuned_on(six_layer_backend, tuned):
    residuals, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    extractor = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer, tuned=layers)
    assert extractor.layout.tuned == (4, 6)
    prompts, _ = extractor.encode([(prompt, None) for prompt in PROMPTS])
    expected = pooled(residuals, list(range(len(PROMPTS))), layers)
    np.testing.assert_allclose(extractor.layout.tuned_block(prompts), expected, atol=2e-2, rtol=2e-2)


def test_a_prompts_tuned_block_is_the_same_with_a_response_after_it(six_layer_backend, tuned):
    _, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    extractor = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer, tuned=layers)
    alone, _ = extractor.encode([(PROMPTS[0], None)])
    in_conversation, response = extractor.encode([(PROMPTS[0], "Sure, first you need a metal pipe and some powder.")])
    layout = extractor.layout
    np.testing.assert_allclose(layout.tuned_block(in_conversation), layout.tuned_block(alone), atol=1e-3)
    np.testing.assert_allclose(layout.tuned_block(response), layout.tuned_block(alone), atol=1e-3)
    assert not np.isnan(response).any()


def test_the_tuned_block_is_cached_apart_from_the_frozen_features(six_layer_backend, tuned, tmp_path):
    _, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    hidden = six_layer_backend.runner.hidden_size

    def extractor() -> FeatureExtractor:
        plain = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer)
        return FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer, tuned=layers,
                                store=FeatureStore(tmp_path / "frozen.sqlite3", plain.layout.width),
                                tuned_store=FeatureStore(tmp_path / f"tuned-{result.weights.digest}.sqlite3", hidden))

    first = extractor()
    vectors, _ = first.encode([(prompt, None) for prompt in PROMPTS])
    again = extractor()
    cached, _ = again.encode([(prompt, None) for prompt in PROMPTS])
    assert again.tokens_computed == 0
    np.testing.assert_array_equal(cached, vectors)
    # The frozen store alone still serves an extractor without tuned layers.
    plain = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer,
                             store=FeatureStore(tmp_path / "frozen.sqlite3", first.layout.frozen_width))
    frozen, _ = plain.encode([(prompt, None) for prompt in PROMPTS])
    assert plain.tokens_computed == 0 and frozen.shape[1] == first.layout.frozen_width


def test_the_digest_of_tuned_weights_changes_with_them(tuned):
    _, result = tuned
    other = dataclasses.replace(result.weights, state={k: v + np.float16(1) for k, v in result.weights.state.items()})
    assert other.digest != result.weights.digest


def test_heads_with_tuned_layers_round_trip_and_decide_fast_verdicts(six_layer_backend, tuned_heads_dir):
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec

    heads = load(tuned_heads_dir, six_layer_backend.feature_fingerprint)
    assert heads.layout.tuned == (4, 6) and (tuned_heads_dir / "heads" / TUNED_FILE).is_file()
    six_layer_backend.use_heads(tuned_heads_dir / "heads")
    policy = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
    try:
        verdicts = six_layer_backend.classify_batch([GuardRequest(policy, PROMPTS[0]), GuardRequest(policy, PROMPTS[1], "No.")])
        assert [v.decided_by for v in verdicts] == ["heads", "heads"]
        assert six_layer_backend.feature_extractor().layout.tuned == (4, 6)
    finally:
        six_layer_backend.use_heads(None)


def test_heads_whose_tuned_layers_file_is_missing_are_refused_with_a_message(tuned_heads_dir):
    (tuned_heads_dir / "heads" / TUNED_FILE).unlink()
    with pytest.raises(HeadsError, match="tuned layers .* unreadable.*fit_heads --tune-epochs"):
        load(tuned_heads_dir)


def test_tuned_weights_for_another_span_of_layers_are_refused(six_layer_backend, tuned):
    _, result = tuned
    with pytest.raises(ValueError, match="do not fit"):
        TunedWeights(4, 5, result.weights.state).module(six_layer_backend.model.get_decoder())


def _with_change_of_rank(weights: TunedWeights, decoder, rank: int) -> TunedWeights:
    """``weights`` rebuilt as the served layers plus a change of exactly ``rank`` in every matrix."""
    rng = np.random.default_rng(0)
    served = {f"layers.{i}.{name}": p.detach().float().numpy()
              for i, layer in enumerate(decoder.layers[weights.cut:weights.top]) for name, p in layer.named_parameters()}
    state = {}
    for name, array in weights.state.items():
        if array.ndim == 2:
            change = rng.normal(size=(array.shape[0], rank)) @ rng.normal(size=(rank, array.shape[1])) / 10
            array = served[name] + change
        state[name] = array.astype(np.float32)
    return TunedWeights(weights.cut, weights.top, state)


def test_a_change_of_low_rank_is_rebuilt_from_its_factors(six_layer_backend, tuned):
    decoder = six_layer_backend.model.get_decoder()
    whole = _with_change_of_rank(tuned[1].weights, decoder, 2)
    factored = whole.low_rank(decoder, 2)
    assert factored.rank == 2 and factored.nbytes < whole.nbytes / 4
    rebuilt = factored.dense(decoder)
    assert rebuilt.keys() == whole.state.keys()
    for name, array in whole.state.items():
        np.testing.assert_allclose(rebuilt[name], array, atol=2e-2)


def test_low_rank_weights_round_trip_through_their_file_with_their_digest(six_layer_backend, tuned, tmp_path):
    decoder = six_layer_backend.model.get_decoder()
    factored = tuned[1].weights.low_rank(decoder, 2)
    meta = factored.save(tmp_path)
    loaded = TunedWeights.load(tmp_path, meta)
    assert loaded.digest == factored.digest != tuned[1].weights.digest
    assert loaded.rank == 2 and meta["info"]["rank"] == 2


def test_tuning_with_a_rank_thresholds_on_the_factored_weights_it_ships(six_layer_backend, tuned):
    residuals, _ = tuned
    decoder = six_layer_backend.model.get_decoder()
    result = tune_prompt_layers(decoder, residuals, TRAIN, GOLD[TRAIN], VAL, GOLD[VAL], cut=4, top=6, epochs=1,
                                log=lambda line: None, rank=2)
    assert result.weights.rank == 2
    means = pooled(residuals, VAL, result.weights.module(decoder))
    np.testing.assert_allclose((means - result.mean) / result.scale @ result.coef + result.bias, result.validation_scores,
                               atol=1e-3, rtol=1e-3)


def test_low_rank_weights_for_another_span_of_layers_are_refused(six_layer_backend, tuned):
    decoder = six_layer_backend.model.get_decoder()
    factored = tuned[1].weights.low_rank(decoder, 2)
    with pytest.raises(ValueError, match="do not fit"):
        TunedWeights(4, 5, factored.state).module(decoder)


def test_a_soup_averages_its_copies_and_fits_its_head_on_the_average(six_layer_backend, tuned):
    residuals, first = tuned
    decoder = six_layer_backend.model.get_decoder()
    second = tune_prompt_layers(decoder, residuals, TRAIN, GOLD[TRAIN], VAL, GOLD[VAL], cut=4, top=6, epochs=1, seed=1,
                                log=lambda line: None)
    soup = soup_prompt_layers(decoder, residuals, [first.weights, second.weights], TRAIN, GOLD[TRAIN], VAL, GOLD[VAL],
                              log=lambda line: None)
    one, two, average = first.weights.dense(decoder), second.weights.dense(decoder), soup.weights.dense(decoder)
    for name, array in average.items():
        np.testing.assert_allclose(array, (one[name].astype(np.float32) + two[name].astype(np.float32)) / 2, atol=2e-3)
    assert soup.weights.info["soup_of"] == 2
    means = pooled(residuals, VAL, soup.weights.module(decoder))
    np.testing.assert_allclose((means - soup.mean) / soup.scale @ soup.coef + soup.bias, soup.validation_scores, atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------------- the peak head (guard.peak_reading)

FILLER = " ".join(["The committee met on Tuesday to review the budget for the new library wing and the garden."] * 12)


def peak_head(hidden: int, threshold: float, **options: object) -> PeakHead:
    return PeakHead(coef=np.linspace(-1, 1, hidden).astype(np.float32), bias=0.0, threshold=threshold, **options)


def test_a_long_prompt_is_read_whole_by_the_peak_reader_and_a_short_one_is_left_to_the_prompt_head(six_layer_backend, tuned):
    _, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    reader = TokenReader(six_layer_backend.runner, six_layer_backend.tokenizer, layers)
    head = peak_head(six_layer_backend.runner.hidden_size, 0.0, min_tokens=64)
    peaks = reader.peaks(head, [PROMPTS[0], FILLER + " " + PROMPTS[0]])
    assert np.isnan(peaks[0]) and np.isfinite(peaks[1])


def test_a_texts_token_states_do_not_depend_on_the_texts_batched_with_it(six_layer_backend, tuned):
    _, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    reader = TokenReader(six_layer_backend.runner, six_layer_backend.tokenizer, layers)
    rows = reader.token_ids([PROMPTS[0], FILLER], 512)
    alone = reader.states([rows[0]])[0]
    batched = reader.states(rows)[0]
    assert alone.shape == (len(rows[0]), six_layer_backend.runner.hidden_size)
    np.testing.assert_allclose(batched, alone, atol=1e-3)


MIDDLING = " ".join(["The committee met on Tuesday to review the budget for the new library wing."] * 5) + " " + PROMPTS[0]


def test_a_prompt_the_features_read_whole_lends_the_peak_reader_the_states_of_that_forward(six_layer_backend, tuned):
    from guard.features import PROMPT_TOKENS, text_key

    _, result = tuned
    layers = result.weights.module(six_layer_backend.model.get_decoder())
    reader = TokenReader(six_layer_backend.runner, six_layer_backend.tokenizer, layers)
    extractor = FeatureExtractor(six_layer_backend.runner, six_layer_backend.tokenizer, tuned=layers)
    middling, long = reader.token_ids([MIDDLING, FILLER * 2], 4096)
    assert 64 < len(middling) <= PROMPT_TOKENS < len(long)
    read_whole: dict[str, np.ndarray] = {}
    extractor.encode([(MIDDLING, "Sure."), (FILLER * 2, None)], prompt_states=read_whole)
    assert list(read_whole) == [text_key(MIDDLING)]  # the long prompt's middle was left out: not read whole
    np.testing.assert_allclose(read_whole[text_key(MIDDLING)], reader.states([middling])[0], atol=2e-3)
    head = peak_head(six_layer_backend.runner.hidden_size, 0.0, min_tokens=64)
    lent = {text_key(MIDDLING): np.zeros_like(read_whole[text_key(MIDDLING)])}
    assert reader.peaks(head, [MIDDLING], known=lent)[0] == head.peak(lent[text_key(MIDDLING)])  # not read again


def test_a_peak_head_round_trips_with_the_heads(six_layer_backend, tuned_heads_dir):
    heads = load(tuned_heads_dir)
    heads.peak = peak_head(six_layer_backend.runner.hidden_size, 1.5, widths=(8, 16), info={"files": {"arena_hard": 3}})
    heads.save(tuned_heads_dir)
    again = load(tuned_heads_dir, six_layer_backend.feature_fingerprint)
    assert again.peak is not None and again.peak.widths == (8, 16) and again.peak.threshold == 1.5
    np.testing.assert_array_equal(again.peak.coef, heads.peak.coef)
    assert again.peak.info == {"files": {"arena_hard": 3}}


def test_heads_with_a_peak_head_but_no_tuned_layers_are_refused_with_a_message(six_layer_backend, tmp_path):
    heads = fit_tiny_heads(six_layer_backend, tmp_path)
    heads.peak = peak_head(six_layer_backend.runner.hidden_size, 0.0)
    heads.save(tmp_path)
    with pytest.raises(HeadsError, match="peak head but no tuned layers"):
        load(tmp_path)


def test_a_peak_over_its_threshold_makes_a_long_prompt_unsafe_and_one_under_it_changes_nothing(six_layer_backend, tuned_heads_dir):
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec

    policy = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
    requests = [GuardRequest(policy, FILLER + " " + PROMPTS[0]), GuardRequest(policy, PROMPTS[8])]
    heads = load(tuned_heads_dir)
    heads.prompt.threshold = 0.999  # the prompt head alone calls nothing unsafe
    verdicts = {}
    for name, threshold in (("none", None), ("under", 1e9), ("over", -1e9)):
        heads.peak = None if threshold is None else peak_head(six_layer_backend.runner.hidden_size, threshold)
        heads.save(tuned_heads_dir)
        six_layer_backend.use_heads(None)
        six_layer_backend.use_heads(tuned_heads_dir / "heads")
        try:
            verdicts[name] = six_layer_backend.classify_batch(requests)
        finally:
            six_layer_backend.use_heads(None)
    assert [v.prompt_label for v in verdicts["none"]] == ["safe", "safe"]
    assert [(v.prompt_label, v.confidence) for v in verdicts["under"]] == [(v.prompt_label, v.confidence) for v in verdicts["none"]]
    # Over: the long prompt is unsafe; the short one (under 64 tokens) was never read by the peak head.
    assert [v.prompt_label for v in verdicts["over"]] == ["unsafe", "safe"]


def test_the_evidence_of_a_reading_is_the_stretch_of_text_under_its_window(six_layer_backend, tuned):
    from guard.peak_reading import PeakReading

    _, result = tuned
    reader = TokenReader(six_layer_backend.runner, six_layer_backend.tokenizer, result.weights.module(six_layer_backend.model.get_decoder()))
    before = reader.token_ids([FILLER], 4096)[0]
    text = FILLER + " " + PROMPTS[0]
    whole = reader.token_ids([text], 4096)[0]
    assert reader.evidence(text, PeakReading(9.0, len(before), len(whole))) == PROMPTS[0]


def test_a_long_prompt_the_peak_head_flags_names_the_stretch_it_found_and_one_it_passes_names_none(six_layer_backend, tuned_heads_dir):
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec

    policy = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
    text = FILLER + " " + PROMPTS[0]
    heads = load(tuned_heads_dir)
    heads.prompt.threshold = 0.999
    found = {}
    for name, threshold in (("under", 1e9), ("over", -1e9)):
        heads.peak = peak_head(six_layer_backend.runner.hidden_size, threshold, widths=(16,))
        heads.save(tuned_heads_dir)
        six_layer_backend.use_heads(None)
        six_layer_backend.use_heads(tuned_heads_dir / "heads")
        try:
            found[name], = six_layer_backend.classify_batch([GuardRequest(policy, text)])
        finally:
            six_layer_backend.use_heads(None)
    assert found["under"].evidence == ""
    assert found["over"].prompt_label == "unsafe" and found["over"].evidence and found["over"].evidence in text
    assert len(six_layer_backend.tokenizer(found["over"].evidence, add_special_tokens=False)["input_ids"]) <= 18


def test_peak_reading_switched_off_leaves_the_prompt_head_alone_to_decide(six_layer_backend, tuned_heads_dir, settings):
    from guard.backends.base import GuardRequest
    from guard.contract import CategorySpec, PolicySpec

    settings.GUARD_PEAK_READING = False
    heads = load(tuned_heads_dir)
    heads.prompt.threshold = 0.999
    heads.peak = peak_head(six_layer_backend.runner.hidden_size, -1e9)  # would call every long prompt unsafe
    heads.save(tuned_heads_dir)
    six_layer_backend.use_heads(tuned_heads_dir / "heads")
    try:
        policy = PolicySpec("Test", (CategorySpec("S1", "Weapons", "building weapons or explosives"),))
        verdict, = six_layer_backend.classify_batch([GuardRequest(policy, FILLER + " " + PROMPTS[0])])
    finally:
        six_layer_backend.use_heads(None)
    assert verdict.prompt_label == "safe"
