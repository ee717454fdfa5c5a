"""Custom categories without a trained head: the zero-shot score and the heads taught by examples.

An operator's own category is scored by the cosine between the text's and the category's
similarity-layer states (its name and description worded by ``ZeroShot.template``), both centred,
calibrated into a probability on the custom-category pool (``guard.head_fitting.fit_zero_shot``);
a category's examples (the editor's "violates"/"allowed" lines, reviewers' decisions) fit a small
per-category head in milliseconds (``example_head``). ``guard.heads`` decides with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guard.contract import CategorySpec

# A category without violating examples is not named for a text whose centred unit similarity-layer state
# is at least this close to one of its near misses (the editor's "allowed" lines, codes reviewers removed):
# without positives no head can be fitted, so the near misses veto their rewordings, not their topic.
# Measured (docs/guard.md): an evaluation text and its nearest same-topic teaching example, median 0.61,
# two safe chat prompts, 99.9th percentile 0.63; a reworded request 0.88. At 0.6 a historical question
# about Islam, taught as a near miss of "Religious debate", vetoed "Why is Islam more correct than
# Christianity?"; at 0.75 no policy-following pair moves.
NEAR_MISS_COSINE = 0.75

# How a category's name and description are worded for the zero-shot score. The fit chooses the
# template on the custom-category pool (``trainer.heads``) and the heads record it; heads without
# one used this.
LEGACY_TEMPLATE = "{name}: {description}"


def category_text(category: CategorySpec, template: str = LEGACY_TEMPLATE) -> str:
    """What the zero-shot score embeds for a category (a category without a description: its name)."""
    name, description = category.name.strip(), category.description.strip()
    return template.format(name=name, description=description) if description and description != name else name


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays near zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


@dataclass
class ZeroShot:
    """Cosine similarity of centred similarity-layer states, calibrated: ``P = sigmoid(a*cos + b*rel + c)``,
    ``rel`` = the cosine minus the best of the policy's other categories."""

    text_center: np.ndarray
    category_center: np.ndarray
    weight_cos: float
    weight_rel: float
    bias: float
    fire_threshold: float  # a category of the policy's own fires alone at this probability
    cover_threshold: float  # the harm head's verdict stands when some category reaches this
    background: np.ndarray  # (m, hidden) unit vectors of centred safe corpus texts: example heads' negatives
    # A taught category (examples) fires when its example head says so: its own balanced boundary.
    taught_threshold: float = 0.5
    # A category whose description is this close to a trained category's (centred cosine in the category
    # space) reads that category's head ("borrows" it): "Crime and fraud" written by an operator is the
    # corpus's "Non-violent crimes". Fitted between the general harm categories and the custom pool's.
    borrow_threshold: float = 1.01
    template: str = LEGACY_TEMPLATE  # how category texts are worded (``category_text``)

    def text_units(self, vectors: np.ndarray) -> np.ndarray:
        return unit_rows(vectors - self.text_center)

    def category_units(self, vectors: np.ndarray) -> np.ndarray:
        return unit_rows(vectors - self.category_center)

    def probabilities(self, cosines: np.ndarray) -> np.ndarray:
        """(n, k) cosines of n texts with a policy's k categories -> (n, k) probabilities."""
        if cosines.shape[1] > 1:
            others = np.stack([np.delete(cosines, j, axis=1).max(axis=1) for j in range(cosines.shape[1])], axis=1)
            rel = cosines - others
        else:
            rel = np.zeros_like(cosines)
        return sigmoid(self.weight_cos * cosines + self.weight_rel * rel + self.bias)


@dataclass
class ExampleHead:
    """A category taught by examples: a tiny logistic head on the centred unit similarity-layer states."""

    coef: np.ndarray
    bias: float
    positives: int
    negatives: int

    def logit(self, units: np.ndarray) -> np.ndarray:
        return units @ self.coef + self.bias


def example_head(
    positives: np.ndarray, negatives: np.ndarray, background: np.ndarray, *, strength: float = 4.0
) -> ExampleHead:
    """Fit a category from a handful of example vectors (unit, centred) in milliseconds.

    Negatives are the category's "allowed" examples (weighted up: they are the near misses)
    and the corpus background of safe texts. Plain ridge-regularised logistic regression by
    Newton steps: no scikit-learn in the serving path, deterministic."""
    x = np.concatenate([positives, negatives, background]) if len(negatives) else np.concatenate([positives, background])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(x) - len(positives))])
    w_sample = np.concatenate([
        np.full(len(positives), len(background) / max(len(positives), 1)),
        np.full(len(negatives), 3.0 * len(background) / max(len(positives), 1) if len(negatives) else 0.0)[: len(negatives)],
        np.ones(len(background)),
    ])
    d = x.shape[1]
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = np.zeros(d + 1)
    ridge = np.full(d + 1, 1.0 / strength)
    ridge[-1] = 1e-6
    for _ in range(12):
        p = sigmoid(xb @ w)
        grad = xb.T @ (w_sample * (p - y)) + ridge * w
        hess = (xb * (w_sample * p * (1 - p))[:, None]).T @ xb + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return ExampleHead(coef=w[:-1].astype(np.float32), bias=float(w[-1]), positives=len(positives), negatives=len(negatives))
