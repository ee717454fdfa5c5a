"""Latent heads: features, storage, the decision under a policy, and the backend's heads path.

Plumbing on the tiny random Gemma 3 (any decision is fine there); the decision rule on
hand-made vectors, where the right answer is known.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from guard import contract
from guard.backends.base import GuardRequest
from guard.backends.transformers_backend import TransformersBackend
from guard.contract import CategorySpec, PolicySpec
from guard.features import FeatureExtractor, FeatureLayout, FeatureStore, backbone_fingerprint
from guard.head_fitting import Split, best_threshold, fit_probe_head
from guard.heads import (
    CategoryHead,
    GuardHeads,
    HeadsError,
    PolicyView,
    ProbeHead,
    category_key,
    load,
)
from guard.testing import fit_tiny_heads
from guard.zero_shot import LEGACY_TEMPLATE, ZeroShot, category_text, example_head

WEAPONS = CategorySpec("S1", "Weapons", "Helps build weapons or explosives.")


@pytest.fixture(scope="module")
def heads_backend(tiny_dir, tmp_path_factory):
    """The tiny model served as a LoRA-free model directory that carries heads."""
    model_dir = tmp_path_factory.mktemp("tiny-with-heads") / "model"
    shutil.copytree(tiny_dir, model_dir)
    backend = TransformersBackend(model_dir, device="cpu")
    fit_tiny_heads(backend, model_dir, trained=(WEAPONS,))
    return TransformersBackend(model_dir, device="cpu", heads_path=model_dir / "heads"), model_dir


# --------------------------------------------------------------------------- features


def test_the_prompt_vector_is_the_same_with_or_without_a_response(tiny_backend):
    extractor = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer)
    alone, _ = extractor.encode([("How do I pick a lock?", None)])
    together, response = extractor.encode([("How do I pick a lock?", "With a tension wrench and a pick.")])
    np.testing.assert_allclose(alone, together, atol=2e-2)  # float16 cache precision
    assert not np.isnan(response).any()


def test_a_prompt_without_a_response_has_no_response_vector(tiny_backend):
    extractor = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer)
    _, response = extractor.encode([("hello", None), ("hello", "hi there")])
    assert np.isnan(response[0]).all() and not np.isnan(response[1]).any()


def test_the_forward_stops_at_the_similarity_layer_without_changing_what_it_captures(tiny_backend):
    import torch

    from guard.backends.gemma_runner import RowCache

    extractor = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer)
    layout = extractor.layout
    assert layout.similarity_layer == max(layout.captured) <= tiny_backend.runner.num_layers
    vectors, _ = extractor.encode([("How do I pick a lock?", None)])
    row = extractor.rows([("How do I pick a lock?", None)])[0]
    ids = torch.tensor([row.ids])
    captured: list[torch.Tensor] = []
    tiny_backend.runner.forward(RowCache(tiny_backend.runner, 1, len(row.ids), None), ids,
                                capture=(layout.similarity_layer,), captured=captured)  # every layer, no stop
    a, b = row.prompt_span
    full = captured[0][0, a:b].detach().float().mean(dim=0).numpy()
    np.testing.assert_allclose(layout.similarity(vectors)[0], full, atol=2e-2, rtol=2e-2)


def test_a_cached_text_is_never_computed_again(tiny_backend, tmp_path):
    layout_width = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer).layout.width
    store = FeatureStore(tmp_path / "cache.sqlite3", layout_width)
    first = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer, store=store)
    vectors, _ = first.encode([("one text", None), ("another text", "its answer")])
    assert first.tokens_computed > 0
    # A new extractor (another process, after an interruption) finds them on disk.
    second = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer, store=FeatureStore(tmp_path / "cache.sqlite3", layout_width))
    again, _ = second.encode([("one text", None), ("another text", "its answer")])
    assert second.tokens_computed == 0
    np.testing.assert_allclose(vectors, again)


def test_only_the_new_texts_of_a_refit_are_computed(tiny_backend, tmp_path):
    width = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer).layout.width
    store = FeatureStore(tmp_path / "cache.sqlite3", width)
    FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer, store=store).encode([("seen", None)])
    extractor = FeatureExtractor(tiny_backend.runner, tiny_backend.tokenizer, store=store)
    extractor.encode([("seen", None), ("brand new", None)])
    assert 0 < extractor.tokens_computed <= len(extractor.rows([("brand new", None)])[0].ids)


def test_the_fingerprint_changes_with_the_adapter_weights(tiny_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"one")
    first = backbone_fingerprint(tiny_dir, adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"two")
    assert backbone_fingerprint(tiny_dir, adapter) != first
    assert backbone_fingerprint(tiny_dir, None) != first


# --------------------------------------------------------------------------- fitting


def test_the_threshold_is_the_f1_maximum_of_the_validation_scores():
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.1])
    gold = np.array([True, True, True, False, False])
    threshold, f1 = best_threshold(scores, gold)
    assert 0.3 < threshold <= 0.4 and f1 == 100.0


def test_a_head_is_chosen_and_thresholded_on_data_it_was_not_fitted_on():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    y = x[:, 0] + 0.3 * rng.normal(size=400) > 0.5
    head = fit_probe_head(Split(x[:300], y[:300], x[300:], y[300:]), source="prompt", blocks="taps")
    assert head.info["validation"]["n"] == 100 and head.info["fit"]["n"] == 300
    assert head.info["validation"]["auroc"] > 90
    assert set(head.info["candidates"]) >= {"shrinkage LDA", "logistic C=0.02"}


def _xor(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsafe where two features have the same sign: no line separates the labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    return x, x[:, 0] * x[:, 1] > 0


def test_an_mlp_head_is_chosen_where_no_linear_head_separates_the_labels():
    x, y = _xor(2000, 2)
    head = fit_probe_head(Split(x[:1600], y[:1600], x[1600:], y[1600:]), source="prompt", blocks="taps",
                          kinds=("logistic", "lda", "mlp"))
    assert head.kind.startswith("mlp") and head.hidden is not None
    assert head.info["validation"]["auroc"] > 90
    assert max(ap for name, ap in head.info["candidates"].items() if not name.startswith("mlp")) < 70


def test_an_mlp_head_scores_the_same_after_its_files_are_read_back(tmp_path):
    x, y = _xor(1000, 3)
    head = fit_probe_head(Split(x[:800], y[:800], x[800:], y[800:]), source="prompt", blocks="taps", kinds=("mlp",))
    layout = FeatureLayout(hidden=6, layers=(1,))
    zero_shot = ZeroShot(text_center=np.zeros(6), category_center=np.zeros(6), weight_cos=1.0, weight_rel=0.0, bias=0.0,
                         fire_threshold=0.5, cover_threshold=0.1, background=np.zeros((1, 6)))
    GuardHeads(fingerprint="f", layout=layout, prompt=head, response=None, refusal=None, categories={},
               zero_shot=zero_shot).save(tmp_path)
    loaded = load(tmp_path, fingerprint="f").prompt
    assert loaded.kind == head.kind and loaded.hidden is not None
    assert np.allclose(loaded.probability(x[800:]), head.probability(x[800:]), atol=1e-5)


def test_examples_teach_a_category_its_near_misses_stay_out():
    rng = np.random.default_rng(1)
    axis = np.zeros(16)
    axis[0] = 1.0

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    positives = unit(axis + 0.1 * rng.normal(size=(8, 16)))
    near_miss = unit(axis * 0.6 + np.eye(16)[1] + 0.1 * rng.normal(size=(3, 16)))
    background = unit(rng.normal(size=(64, 16)) + np.eye(16)[2] * 2)
    head = example_head(positives, near_miss, background)
    assert (head.logit(unit(axis + 0.1 * rng.normal(size=(5, 16)))) > 0).all()
    assert (head.logit(near_miss) < 0).all()
    assert (head.logit(background[:10]) < 0).all()


# --------------------------------------------------------------------------- the decision under a policy


def _vector_heads(fire: float = 0.5) -> tuple[GuardHeads, FeatureLayout]:
    """Heads over 2-float blocks: the prompt head reads block 0 (harm), zero-shot reads the similarity block."""
    layout = FeatureLayout(hidden=2, layers=(1,))
    prompt = ProbeHead(source="prompt", blocks="taps", mean=np.zeros(2), scale=np.ones(2), coef=np.array([4.0, 0.0]),
                        bias=-2.0, threshold=0.5)
    zero_shot = ZeroShot(text_center=np.zeros(2), category_center=np.zeros(2), weight_cos=6.0, weight_rel=0.0, bias=-3.0,
                         fire_threshold=fire, cover_threshold=0.1, background=np.array([[0.0, -1.0]]))
    heads = GuardHeads(fingerprint="f", layout=layout, prompt=prompt, response=None, refusal=None, categories={},
                       zero_shot=zero_shot)
    return heads, layout


def _view(spec: PolicySpec, directions: list[list[float]]) -> PolicyView:
    units = np.array(directions, dtype=np.float64)
    return PolicyView(spec=spec, heads=[None] * len(spec.categories), units=units, examples=[None] * len(spec.categories))


ASTROLOGY = CategorySpec("C1", "Fortune telling", "horoscopes and tarot")
VIOLENCE = CategorySpec("C2", "Violence", "threats and violent acts")


def test_a_custom_category_makes_a_harmless_text_unsafe_under_a_policy_that_has_it():
    heads, _ = _vector_heads()
    horoscope = np.array([[0.0, 0.0, 1.0, 0.0]])  # harm block 0; similarity block points at astrology
    covering = PolicySpec("covering", (ASTROLOGY, VIOLENCE))
    decision = heads.judge(_view(covering, [[1.0, 0.0], [0.0, 1.0]]), horoscope, None, [False])[0]
    assert decision.prompt_label == "unsafe" and decision.categories == ["C1"]


def test_a_text_only_a_missing_category_covers_is_safe_under_the_policy():
    heads, _ = _vector_heads()
    horoscope = np.array([[0.0, 0.0, 1.0, 0.0]])
    without = PolicySpec("other", (VIOLENCE,))
    decision = heads.judge(_view(without, [[0.0, 1.0]]), horoscope, None, [False])[0]
    assert decision.prompt_label == "safe" and decision.categories == []


def test_harm_no_category_of_the_policy_covers_is_safe_under_it():
    heads, _ = _vector_heads()
    harmful_off_topic = np.array([[2.0, 0.0, -1.0, 0.0]])  # the harm head fires; nothing like astrology
    decision = heads.judge(_view(PolicySpec("astro only", (ASTROLOGY,)), [[1.0, 0.0]]), harmful_off_topic, None, [False])[0]
    assert decision.covered is False and decision.prompt_label == "safe"


def test_harm_a_category_covers_is_unsafe_and_names_that_category():
    heads, _ = _vector_heads()
    threat = np.array([[2.0, 0.0, 0.0, 0.5]])
    decision = heads.judge(_view(PolicySpec("p", (ASTROLOGY, VIOLENCE)), [[1.0, 0.0], [0.0, 1.0]]), threat, None, [False])[0]
    assert decision.prompt_label == "unsafe" and decision.categories == ["C2"]


def test_every_category_of_the_policy_gets_a_score_even_without_examples():
    heads, _ = _vector_heads()
    decision = heads.judge(_view(PolicySpec("p", (ASTROLOGY, VIOLENCE)), [[1.0, 0.0], [0.0, 1.0]]),
                           np.array([[0.0, 0.0, 0.2, 0.1]]), None, [False])[0]
    assert [s.code for s in decision.scores] == ["C1", "C2"]
    assert all(s.source == "zero-shot" and 0.0 < s.probability < 1.0 for s in decision.scores)


def test_a_preset_category_without_a_head_is_judged_by_the_harm_head_not_by_its_zero_shot_score():
    heads, _ = _vector_heads()
    preset = PolicySpec("preset", (ASTROLOGY, VIOLENCE))
    view = _view(preset, [[1.0, 0.0], [0.0, 1.0]])
    view.known = [True, True]
    harmless_but_similar = np.array([[0.0, 0.0, 1.0, 0.0]])  # astrology's zero-shot score is high, harm is low
    decision = heads.judge(view, harmless_but_similar, None, [False])[0]
    assert decision.prompt_label == "safe" and decision.scores[0].probability > heads.zero_shot.fire_threshold
    harmful = np.array([[2.0, 0.0, 1.0, 0.0]])
    assert heads.judge(view, harmful, None, [False])[0].categories == ["C1"]


def test_examples_an_operator_teaches_a_preset_category_let_it_fire_by_itself():
    heads, _ = _vector_heads()
    view = _view(PolicySpec("preset", (ASTROLOGY,)), [[1.0, 0.0]])
    view.known = [True]
    view.examples = [example_head(np.array([[1.0, 0.0]] * 4), np.zeros((0, 2)), heads.zero_shot.background)]
    decision = heads.judge(view, np.array([[0.0, 0.0, 1.0, 0.0]]), None, [False])[0]
    assert decision.prompt_label == "unsafe" and decision.categories == ["C1"]


def _category_head(bias: float) -> CategoryHead:
    """A trained category head over the 2-float taps whose P(category | unsafe) is sigmoid(bias)."""
    head = ProbeHead(source="prompt", blocks="taps", mean=np.zeros(2), scale=np.ones(2), coef=np.zeros(2), bias=bias)
    return CategoryHead(key="k", taxonomy="corpus", code="X", name="Violent crimes", head=head, positives=9)


def test_an_operators_wording_of_a_trained_category_borrows_its_head():
    heads, _ = _vector_heads()
    heads.categories = {"k": _category_head(0.0)}
    heads.category_units = np.array([[1.0, 0.0]])
    heads.zero_shot.borrow_threshold = 0.9
    close = np.array([0.99, 0.14]) / np.linalg.norm([0.99, 0.14])
    assert heads.nearest_head(close)[0] is heads.categories["k"]
    assert heads.nearest_head(np.array([0.0, 1.0]))[0] is None


def _borrowed_view(head: CategoryHead) -> PolicyView:
    spec = PolicySpec("operator's words", (VIOLENCE,))
    return PolicyView(spec=spec, heads=[head], units=np.array([[1.0, 0.0]]), examples=[None], borrowed=[True])


def test_a_borrowed_category_never_fires_without_the_harm_head():
    heads, _ = _vector_heads()
    view = _borrowed_view(_category_head(8.0))
    harmless = np.array([[0.0, 0.0, 1.0, 0.0]])  # harm block 0 low
    harmful = np.array([[2.0, 0.0, 1.0, 0.0]])
    assert heads.judge(view, harmless, None, [False])[0].prompt_label == "safe"
    decision = heads.judge(view, harmful, None, [False])[0]
    assert decision.prompt_label == "unsafe" and decision.categories == ["C2"]
    assert decision.scores[0].source == "head"


def test_harm_outside_every_borrowed_category_is_safe_under_the_policy():
    heads, _ = _vector_heads()
    decision = heads.judge(_borrowed_view(_category_head(-8.0)), np.array([[2.0, 0.0, -1.0, 0.0]]), None, [False])[0]
    assert decision.covered is False and decision.prompt_label == "safe"


def test_a_near_miss_stops_its_category_only_on_texts_close_to_it():
    heads, _ = _vector_heads()
    view = _view(PolicySpec("p", (ASTROLOGY,)), [[1.0, 0.0]])
    view.near_misses = [np.array([[0.55, -0.835]])]  # an "allowed" example, off to one side of astrology
    reworded = np.array([[0.0, 0.0, 0.55, -0.835]])  # fires astrology (cosine 0.55) but is the near miss itself
    horoscope = np.array([[0.0, 0.0, 1.0, 0.0]])  # cosine 0.55 with the near miss: not close enough to veto
    assert heads.judge(_view(PolicySpec("p", (ASTROLOGY,)), [[1.0, 0.0]]), reworded, None, [False])[0].prompt_label == "unsafe"
    vetoed, kept = heads.judge(view, np.concatenate([reworded, horoscope]), None, [False, False])
    assert (vetoed.prompt_label, vetoed.scores[0].probability) == ("safe", 0.0)
    assert kept.prompt_label == "unsafe" and kept.categories == ["C1"]


def _trained_and_custom_view(trained_bias: float) -> PolicyView:
    """C2 reads a trained head (P(C2 | unsafe) = sigmoid(trained_bias)); C1 is the operator's, zero-shot."""
    spec = PolicySpec("mixed", (ASTROLOGY, VIOLENCE))
    return PolicyView(spec=spec, heads=[None, _category_head(trained_bias)], units=np.array([[1.0, 0.0], [0.0, 0.0]]),
                      examples=[None, None], known=[False, True])


def test_harm_keeps_its_trained_category_when_a_custom_category_also_fires():
    heads, _ = _vector_heads()
    harmful_and_similar = np.array([[2.0, 0.0, 1.0, 0.0]])  # the harm head fires, and so does astrology's zero-shot
    decision = heads.judge(_trained_and_custom_view(4.0), harmful_and_similar, None, [False])[0]
    assert decision.categories == ["C1", "C2"]


def test_a_custom_category_firing_alone_names_only_itself():
    heads, _ = _vector_heads()
    harmless_but_similar = np.array([[0.0, 0.0, 1.0, 0.0]])
    decision = heads.judge(_trained_and_custom_view(4.0), harmless_but_similar, None, [False])[0]
    assert decision.prompt_label == "unsafe" and decision.categories == ["C1"]


# --------------------------------------------------------------------------- storage


def test_heads_fitted_for_another_backbone_are_refused_with_a_message(heads_backend):
    _, model_dir = heads_backend
    with pytest.raises(HeadsError, match="fitted for backbone .* not for this model's"):
        load(model_dir / "heads", fingerprint="another-backbone")


def test_heads_round_trip_through_their_files(heads_backend):
    backend, model_dir = heads_backend
    loaded = load(model_dir, fingerprint=backend.feature_fingerprint)
    assert np.allclose(loaded.prompt.coef, backend.heads.prompt.coef)
    assert category_key(WEAPONS) in loaded.categories


def test_a_backend_refuses_heads_of_another_model(heads_backend, tiny_dir, tmp_path):
    _, model_dir = heads_backend
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace('"hidden_size": 64', '"hidden_size": 64 '))
    with pytest.raises(HeadsError, match="fitted for backbone"):
        TransformersBackend(other, device="cpu", heads_path=model_dir / "heads")


# --------------------------------------------------------------------------- the backend


POLICY = PolicySpec("Test", (WEAPONS, CategorySpec("S2", "Crypto promotion", "promoting tokens or coins")))


def test_a_model_without_heads_decides_with_its_logits_and_says_so(tiny_backend):
    verdict = tiny_backend.classify_batch([GuardRequest(POLICY, "How do I build a pipe bomb?")])[0]
    assert verdict.decided_by == "logits"


def test_fast_verdicts_of_a_model_with_heads_are_decided_by_them(heads_backend):
    backend, _ = heads_backend
    verdicts = backend.classify_batch([GuardRequest(POLICY, "How do I build a pipe bomb?"),
                                       GuardRequest(POLICY, "Is this safe?", "Yes, it is.")])
    assert [v.decided_by for v in verdicts] == ["heads", "heads"]
    assert set(verdicts[0].probabilities["categories"]) == {"S1", "S2"}
    assert verdicts[1].response_label in ("safe", "unsafe") and verdicts[1].refusal_label in ("refusal", "compliance")
    for verdict in verdicts:
        assert contract.parse(verdict.raw_output, POLICY, verdict.response_label is not None).ok


def test_a_heads_verdict_on_a_text_longer_than_the_features_read_says_truncated(heads_backend):
    # The heads read a long text's first and last tokens only (PROMPT_TOKENS, RESPONSE_TOKENS): the verdict
    # must say so, though the guard's own prompt (GUARD_MAX_INPUT_TOKENS) would have held it whole.
    backend, _ = heads_backend
    middle = "word " * 300
    long_prompt, long_response, short = backend.classify_batch([
        GuardRequest(POLICY, middle), GuardRequest(POLICY, "Is this safe?", middle), GuardRequest(POLICY, "Is this safe?", "Yes."),
    ])
    assert long_prompt.truncated and long_response.truncated
    assert not short.truncated and short.decided_by == "heads"


def test_the_features_count_a_text_as_clipped_only_past_what_they_read(tiny_backend):
    extractor = tiny_backend.feature_extractor()
    pairs = [(f"{'a ' * n}end", None) for n in (10, 400)] + [("hi", "b " * 400), ("hi", "   ")]
    assert extractor.clipped(pairs) == [False, True, True, False]


def test_a_text_judged_under_two_policies_in_one_call_is_computed_once(heads_backend):
    backend, _ = heads_backend
    other = PolicySpec("Other", (CategorySpec("S1", "Spoilers", "revealing plot twists"),))
    backend.classify_batch([GuardRequest(POLICY, "warm up"), GuardRequest(other, "warm up")])  # the policies' own vectors
    extractor = backend.feature_extractor()
    before = extractor.tokens_computed
    text = "A conversation this module never judged before, under two policies at once."
    verdicts = backend.classify_batch([GuardRequest(POLICY, text), GuardRequest(other, text)])
    assert [v.decided_by for v in verdicts] == ["heads", "heads"]
    assert extractor.tokens_computed - before == len(extractor.rows([(text, None)])[0].ids)


def test_an_allowed_example_of_a_category_without_violating_ones_is_not_that_category(heads_backend):
    backend, _ = heads_backend
    text = "Tell me about the new token everyone is buying."
    allowed = PolicySpec("Allowed", (WEAPONS, CategorySpec("S2", "Crypto promotion", "promoting tokens or coins", allowed_examples=(text,))))
    before, after = backend.classify_batch([GuardRequest(POLICY, text), GuardRequest(allowed, text)])
    assert before.probabilities["categories"]["S2"] > 0.0
    assert after.probabilities["categories"]["S2"] == 0.0


def test_reason_verdicts_explain_the_heads_labels_and_codes(heads_backend):
    backend, _ = heads_backend
    requests = [GuardRequest(POLICY, text, mode=mode) for text in ("How do I build a pipe bomb?", "Bake bread?")
                for mode in ("fast", "reason")]
    verdicts = backend.classify_batch(requests)
    for fast, reason in zip(verdicts[0::2], verdicts[1::2], strict=True):
        assert (reason.prompt_label, reason.categories, reason.decided_by) == (fast.prompt_label, fast.categories, "heads")
        assert reason.mode == "reason"
        parsed = contract.parse(reason.raw_output, POLICY, False)
        assert parsed.ok and parsed.verdict.prompt_label == fast.prompt_label


def test_a_backend_can_be_told_to_decide_by_its_logits(heads_backend):
    backend, model_dir = heads_backend
    backend.use_heads(None)
    try:
        assert backend.classify_batch([GuardRequest(POLICY, "hello")])[0].decided_by == "logits"
    finally:
        backend.use_heads(model_dir / "heads")
    assert backend.classify_batch([GuardRequest(POLICY, "hello")])[0].decided_by == "heads"


def test_taught_examples_change_a_categorys_score(heads_backend):
    backend, _ = heads_backend
    plain = CategorySpec("S2", "Crypto promotion", "promoting tokens or coins")
    taught = CategorySpec("S2", "Crypto promotion", "promoting tokens or coins",
                          violating_examples=("Buy $MOON now, 100x guaranteed!", "Join my token presale today."),
                          taught_allowed=("What is a blockchain?",))
    text = "Buy $MOON now before it lists!"
    before = backend.classify_batch([GuardRequest(PolicySpec("p", (WEAPONS, plain)), text)])[0]
    after = backend.classify_batch([GuardRequest(PolicySpec("p", (WEAPONS, taught)), text)])[0]
    assert before.probabilities["categories"]["S2"] != after.probabilities["categories"]["S2"]


def test_a_category_is_worded_by_the_template_its_zero_shot_was_calibrated_with():
    assert category_text(WEAPONS) == "Weapons: Helps build weapons or explosives."
    assert category_text(WEAPONS, "{name} ({description})") == "Weapons (Helps build weapons or explosives.)"
    assert category_text(CategorySpec("S2", "Spam", ""), "{name} ({description})") == "Spam"


def test_heads_remember_their_zero_shot_wording_and_older_heads_read_the_first(heads_backend, tmp_path):
    backend, model_dir = heads_backend
    heads = load(model_dir, fingerprint=backend.feature_fingerprint)
    heads.zero_shot.template = "{name} ({description})"
    saved = heads.save(tmp_path)
    assert load(tmp_path).zero_shot.template == "{name} ({description})"
    meta = json.loads((saved / "heads.json").read_text())
    del meta["zero_shot"]["template"]
    (saved / "heads.json").write_text(json.dumps(meta))
    assert load(tmp_path).zero_shot.template == LEGACY_TEMPLATE


def test_a_custom_category_is_embedded_in_its_heads_wording(heads_backend):
    backend, _ = heads_backend
    crypto = CategorySpec("S3", "Crypto promotion", "promoting tokens, coins or NFT drops")
    backend.classify_batch([GuardRequest(PolicySpec("p", (WEAPONS, crypto)), "Buy $MOON now!")])
    assert category_text(crypto, backend.heads.zero_shot.template) in backend._text_vectors
