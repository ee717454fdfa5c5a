"""The trainable copy of the backbone's upper layers (``guard.tuned_layers``), on a tiny random Gemma 3
of six layers (five sliding-window layers and one global, as the real model alternates them)."""

from __future__ import annotations

import pytest
import torch

from guard.backends.gemma_runner import RowCache
from guard.tuned_layers import TunedLayers, mean_over_text

TEXTS = ("How do I pick a lock?", "hello", "Write a short story about a dragon who guards a library at night.")


@pytest.fixture(scope="module")
def six_layer_backend():
    from guard.backends.transformers_backend import TransformersBackend
    from guard.testing import tiny_model_dir

    return TransformersBackend(tiny_model_dir(layers=6), device="cpu", max_new_tokens=4, max_input_tokens=256)


def captured_states(backend, layers: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The runner's residual streams after ``layers`` for TEXTS, right-padded as the runner pads them."""
    rows = [[backend.tokenizer.bos_token_id, *backend.tokenizer.encode(text, add_special_tokens=False)] for text in TEXTS]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    lengths = torch.tensor([len(row) for row in rows])
    captured: list[torch.Tensor] = []
    with torch.inference_mode():
        backend.runner.forward(RowCache(backend.runner, len(rows), width, None), ids, lengths, capture=layers, captured=captured)
    return [state.float().clone() for state in captured], lengths


def test_a_frozen_copy_of_the_upper_layers_reproduces_the_runners_own_states(six_layer_backend):
    (below, above), lengths = captured_states(six_layer_backend, (3, 6))
    copied = TunedLayers(six_layer_backend.model.get_decoder(), 3, 6).float()
    assert "full_attention" in copied.types and "sliding_attention" in copied.types
    with torch.no_grad():
        out = copied(below, lengths)
    for row, length in enumerate(lengths.tolist()):  # the padding's states are never read
        torch.testing.assert_close(out[row, :length], above[row, :length], atol=2e-3, rtol=2e-3)


def test_tuning_the_copy_leaves_the_served_model_unchanged(six_layer_backend):
    decoder = six_layer_backend.model.get_decoder()
    served = {name: p.detach().clone() for name, p in decoder.layers[4].named_parameters()}
    copied = TunedLayers(decoder, 4, 6).float()
    (below,), lengths = captured_states(six_layer_backend, (4,))
    optimiser = torch.optim.SGD(copied.parameters(), lr=0.1)
    copied(below, lengths).pow(2).mean().backward()
    optimiser.step()
    assert any(not torch.equal(p, served[name]) for name, p in copied.layers[0].named_parameters())
    for name, p in decoder.layers[4].named_parameters():
        assert torch.equal(p, served[name])


def test_layers_outside_the_decoder_are_refused(six_layer_backend):
    with pytest.raises(ValueError, match="6 layers"):
        TunedLayers(six_layer_backend.model.get_decoder(), 4, 7)


def test_the_mean_pools_each_rows_text_alone():
    states = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    pooled = mean_over_text(states, lengths=torch.tensor([4, 3]), starts=torch.tensor([1, 0]))
    assert pooled[:, 0].tolist() == [(1 + 2 + 3) / 3, (4 + 5 + 6) / 3]
